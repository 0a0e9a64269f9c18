"""Recording training dynamics from other training frameworks (optional extras).

- :mod:`analytics.integrations.hf`: ``HFDynamicsCallback`` for a Hugging Face ``Trainer``
  (extra ``hf``).
- :mod:`analytics.integrations.lightning`: ``LightningDynamicsCallback`` for a Lightning
  ``Trainer`` (extra ``lightning``).

Both write what :class:`analytics.recorder.DynamicsRecorder` writes. Importing this package
imports neither framework.
"""

__all__: list[str] = []
