"""The one error type raised at the protocol boundary."""


class ProtocolError(ValueError):
    """A message, command or recording that does not follow the contract.

    The message names what is wrong (and, where there is one, what to do about it), so a
    monitor can show it to a person as it is.
    """
