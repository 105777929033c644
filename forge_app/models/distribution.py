"""Distribution models (ACCESS_TOKENs, channels, publishes, LIVE instances): issue 5.

Placeholder owned by the distribution work; imported by ``forge_app.models`` so its tables
register on ``Base.metadata``.
"""
