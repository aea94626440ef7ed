"""The runs wing: one run start to finish, and many. Imports doggos.base and doggos.pipeline.

The driver (handed its post-run steps), background runs and their queue (the manager), the post-run step mechanism.
"""
