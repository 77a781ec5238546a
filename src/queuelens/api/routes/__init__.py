"""The API's routers, one module per group of endpoints; :func:`queuelens.api.create_app`
includes each with the role it needs."""
