{#- The validated rows as a view, for the docs site and the validation unit test: the models
    and tests that need them inline the same SQL (macros/validated.sql) instead of reading it. -#}
{{ loginvault_validated_rows() }}
