"""The wire contract between a trainer and its monitors: messages, codec, transports, recording.

No torch and no textual here: both sides import this package.
"""

from .codec import decode, encode, encode_step, pack, unpack
from .columns import StepColumns
from .commands import make_command, validate_command
from .errors import ProtocolError
from .messages import (
    Command,
    DatasetReport,
    EpochSummary,
    Event,
    FileProblem,
    Heartbeat,
    Message,
    ModelSummary,
    Preview,
    Reply,
    Schema,
    Step,
    StepChunk,
    new_run_id,
)
from .run import RunHistory
from .version import PROTOCOL_VERSION

__all__ = [
    "Command",
    "DatasetReport",
    "EpochSummary",
    "Event",
    "FileProblem",
    "Heartbeat",
    "Message",
    "ModelSummary",
    "PROTOCOL_VERSION",
    "Preview",
    "ProtocolError",
    "Reply",
    "RunHistory",
    "Schema",
    "Step",
    "StepChunk",
    "StepColumns",
    "decode",
    "encode",
    "encode_step",
    "make_command",
    "new_run_id",
    "pack",
    "unpack",
    "validate_command",
]
