"""The core: the hub (who reads what, one Redis subscription per channel, the fan-out,
recovery) and the per-connection state machine. Pure logic: no I/O, no asyncio transports,
no Redis client; unit-tested by feeding it messages and frames."""
