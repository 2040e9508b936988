"""The schema room: the bootstrap (roles, schemas, tables, functions, grants) and the ACL check."""
