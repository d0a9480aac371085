"""Work in progress."""


def routes() -> list:
    return []
