"""The STAC API: stac-fastapi-pgstac's client with provider-scoped ids."""
