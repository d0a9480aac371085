"""Every wire protocol the server speaks, in one registry that `create_app` and `/openapi.json` read.

A protocol is a module with `routes(settings)` and `openapi_paths()`; adding one is that
module and one line below. `switches` are its names in config.yaml's `protocols:` section
(on unless set to false); a protocol without switches is always on. The modules in this
package never import one another (an import-linter contract): what tus and the IETF draft
share lives in `server.resumable`, and the `/files/` dispatcher gets their dialects from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.routing import BaseRoute

from .. import openapi
from ..resumable import Dialect
from ..settings import Settings
from . import (
    avatar_api,
    chunk_api,
    files,
    ietf_draft,
    picture_api,
    profile_image_api,
    setting_avatar_api,
    tus,
    user_image_api,
    web_page,
)


@dataclass(frozen=True)
class Protocol:
    name: str
    routes: Callable[[Settings], list[BaseRoute]]
    openapi_paths: Callable[[], openapi.Doc]
    switches: tuple[str, ...] = ()
    # For a part switched by another setting than `protocols:` (the page: `server.web_page`).
    when: Callable[[Settings], bool] | None = None

    def enabled(self, settings: Settings) -> bool:
        if self.when is not None:
            return self.when(settings)
        return not self.switches or any(settings.protocol_enabled(switch) for switch in self.switches)


def _files_routes(settings: Settings) -> list[BaseRoute]:
    # The draft claims the requests that name its header; tus, the fallback, takes the rest.
    dialects: list[Dialect] = []
    if settings.protocol_enabled("ietf"):
        dialects.append(ietf_draft.DIALECT)
    if settings.protocol_enabled("tus"):
        dialects.append(tus.DIALECT)
    return files.routes(dialects)


# In this order the router tries their routes: the resumable protocols' upload resource first,
# since one upload makes many requests to it (each route tried before costs every one of them).
PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("files", _files_routes, files.openapi_paths, ("tus", "ietf")),
    Protocol("chunk_api", chunk_api.routes, chunk_api.openapi_paths, ("chunk_api",)),
    Protocol("picture_api", picture_api.routes, picture_api.openapi_paths, ("picture_api",)),
    Protocol("user_image_api", user_image_api.routes, user_image_api.openapi_paths, ("user_image_api",)),
    Protocol("profile_image_api", profile_image_api.routes, profile_image_api.openapi_paths, ("profile_image_api",)),
    Protocol(
        "setting_avatar_api", setting_avatar_api.routes, setting_avatar_api.openapi_paths, ("setting_avatar_api",)
    ),
    Protocol("avatar_api", avatar_api.routes, avatar_api.openapi_paths),
    Protocol("web_page", web_page.routes, web_page.openapi_paths, when=lambda settings: settings.server.web_page),
)


def enabled(settings: Settings) -> list[Protocol]:
    return [protocol for protocol in PROTOCOLS if protocol.enabled(settings)]


def routes(settings: Settings) -> list[BaseRoute]:
    return [route for protocol in enabled(settings) for route in protocol.routes(settings)]


def openapi_document(settings: Settings) -> openapi.Doc:
    """The OpenAPI document of a server with `settings`: its own paths and its enabled protocols'."""
    paths = openapi.server_paths()
    for protocol in enabled(settings):
        paths.update(protocol.openapi_paths())
    return openapi.document(paths)
