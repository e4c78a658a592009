"""OpenAPI schema fragments shared by fields and the schema generator."""

EMAIL = {"type": "string", "format": "email", "maxLength": 254}
# The "email" format alone would not take the blank.
EMAIL_OR_BLANK = {"type": "string", "maxLength": 254, "anyOf": [{"format": "email"}, {"maxLength": 0}]}
