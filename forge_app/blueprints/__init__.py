"""One blueprint per area of the FORGE; ``forge_app.app.register_blueprints`` wires them."""
