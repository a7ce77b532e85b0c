"""Local servers that speak providers' documented protocols (see ``../shared/providers.md``), for tests.

Each one runs a real HTTP server on 127.0.0.1 in a thread, answers as the provider's API does and
records every request it got. Use them as context managers (``with TwilioServer() as twilio: …``).
"""
