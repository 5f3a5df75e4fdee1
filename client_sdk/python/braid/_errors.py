"""The exception every braid call raises when the agent or the SDK says no."""


class BraidError(Exception):
    """A failed braid call: ``code`` (int) and ``code_name`` (e.g. "NotFound") name the status,
    ``message`` says what is wrong and what to do."""

    def __init__(self, code: int, code_name: str, message: str) -> None:
        super().__init__(f"{code_name}: {message}")
        self.code = code
        self.code_name = code_name
        self.message = message
