"""Development tools of the REWIND runtime, kept out of the runtime image (user's shell).

``invoker`` emulates OpenWhisk's invoker against the image (tests, ``rewind invoke
--docker``); ``bench`` is the benchmark suite (``rewind bench``). Both sit above
:mod:`rewind` and import it; nothing in :mod:`rewind` imports them except the ``rewind``
command, and only when one of their commands runs.
"""
