"""A small Django project the backend tests run against."""
