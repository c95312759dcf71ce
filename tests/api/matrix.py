"""api's pages in the permission matrix (tests/evalsite/test_permissions.py). The token API's own
operations answer 401/403 JSON rather than the login page: tests/api/test_roles.py covers them."""

MATRIX: dict[str, str] = {
    "api:tokens": "scorer",
    "api:token_revoke": "scorer",
    "api:docs": "scorer",
    "api:campaign_schedule": "lead",
    "api:campaign_rerun": "lead",
    "api:series_list": "lead",
    "api:series": "lead",
    "api:series_unschedule": "lead",
}

# The token API's URL namespace, left out of the page matrix.
TOKEN_API_NAMESPACE = "api-v1"
