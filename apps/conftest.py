pytest_plugins = ["apps.common.testing"]
