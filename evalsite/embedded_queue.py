"""The embedded task queue: kombu's filesystem transport, with messages published atomically.

kombu's filesystem transport creates a message file, then writes into it; a consumer polling the
folder meanwhile can move the file away and read it while it is still empty, and the JSON error
that follows stops the whole worker. Here a message is written under a hidden name that no
consumer picks up, then renamed into place, which a rename within one folder does atomically.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs) -> None:
        # The name kombu's consumer expects (<time>_<uuid>.<queue>.msg, sorted oldest first).
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        target = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "xb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, target)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {target!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
