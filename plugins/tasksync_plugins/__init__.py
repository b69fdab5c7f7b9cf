"""TaskSync's built-in plugins, each a plain module registered through an entry point
(see pyproject.toml, group `tasksync`): dev, jwt and header auth; toast, webhook and log notifiers.
"""
