pytest_plugins = ["apps.common.testing", "apps.partners.testing", "apps.oauth.testing", "apps.live.testing"]
