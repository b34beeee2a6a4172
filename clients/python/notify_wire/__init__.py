"""The wire rules of notify-gateway: what the gateway and every producer agree on (pure).

No I/O and no server dependency; the gateway and the publisher library both build on it.

- :mod:`notify_wire.frames`: what a client may send (typed, parsed);
- :mod:`notify_wire.codes`: close codes, close reasons, error codes (one table each);
- :mod:`notify_wire.channels`: channel-name rules, the reserved and user channels;
- :mod:`notify_wire.history`: the history stream layout, scripts and envelope;
- :mod:`notify_wire.control`: gateway-to-gateway control messages;
- :mod:`notify_wire.sessions`: stored session records and session tokens;
- :mod:`notify_wire.backoff`: the one backoff rule and its policies;
- :mod:`notify_wire.env`, :mod:`notify_wire.redis_config`, :mod:`notify_wire.shared`:
  reading the environment, where Redis is, and the settings both sides share.
"""
