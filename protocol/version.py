"""The protocol's own version, kept apart from the package version.

A message whose major version differs from ``PROTOCOL_MAJOR`` is refused; a newer minor
version is read and its unknown fields are ignored.
"""

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
PROTOCOL_VERSION = (PROTOCOL_MAJOR, PROTOCOL_MINOR)
