"""The worker process: hosts one engine and speaks the frame protocol to the runtime."""
