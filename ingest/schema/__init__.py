"""The schema: the bootstrap (migrations, repeatable definitions, logins) and the privileges check."""
