"""The console's routes, one module per area; ``console.app.create_app`` includes their routers."""
