"""The node's HTTP API: an aiohttp application (`app.py`), bearer-token authentication (`auth.py`), the
backend protocol the node implements (`backend.py`), the WebSocket event pump (`stream.py`) and the OpenAPI
document (`openapi.py`)."""
