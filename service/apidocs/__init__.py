"""The API's documentation page (Swagger UI), served from k2e itself."""
