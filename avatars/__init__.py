"""Images: validate, orient, strip and resize uploads; store versioned avatars."""

from avatars.errors import ImageRejected, ImageTooComplex, ImageTooLarge, InvalidImage, UnsupportedFormat
from avatars.pipeline import Pipeline
from avatars.processing import PipelineSettings, ProcessedAvatar, Rendition
from avatars.store import AvatarStore, AvatarVersion, LocalAvatarStore, RenditionBody, RenditionFile

__all__ = [
    "AvatarStore",
    "AvatarVersion",
    "ImageRejected",
    "ImageTooComplex",
    "ImageTooLarge",
    "InvalidImage",
    "LocalAvatarStore",
    "Pipeline",
    "PipelineSettings",
    "ProcessedAvatar",
    "Rendition",
    "RenditionBody",
    "RenditionFile",
    "UnsupportedFormat",
]
