"""HTTP and WebSocket routes. Each module is one surface: Dapr, HTTP publish, operations, /ws."""
