"""The web layer around the engine: the model's line and service, the HTTP and Gradio APIs, and the page's parts."""

import os

# Set by the app, not left to the user: no telemetry or version checks leave the machine. Gradio reads this
# when it is imported and again at launch, so every entry point imports this package before Gradio.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
