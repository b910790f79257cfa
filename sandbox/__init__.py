"""The sandbox tenant: a loopback HTTP server speaking the Exchange admin API, Graph and the
managed-identity protocol, reproducing rules B1-B23. For development and tests; never deployed."""
