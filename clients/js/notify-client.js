/**
 * Browser client for notify-gateway: wire contract v1 (docs/protocol.md), guide in docs/browser.md.
 *
 * A plain ES module with no dependencies and no build step. It authenticates with a first
 * `auth` frame (the token never goes into the URL), matches replies to requests by `ref`,
 * reconnects by itself with exponential backoff and jitter, subscribes again to every channel
 * after a reconnect (resuming channels with history from the last offset seen, so nothing is
 * missed), and sends application pings to notice a dead link the browser would not.
 *
 *   import { NotifyClient } from "/client.js";
 *   const client = new NotifyClient("wss://gateway.example/ws", { token });
 *   client.on("unauthorized", () => location.assign("/login"));
 *   await client.subscribe("user:42", (data) => console.log(data));
 */

/** Defaults of every option but `token`; all durations in milliseconds. */
export const DEFAULTS = Object.freeze({
  pingIntervalMs: 15_000, // application ping while open
  pingTimeoutMs: 10_000, // no pong (or any frame) this long after a ping: the link is dead
  connectTimeoutMs: 10_000, // from new WebSocket() to `welcome`
  minDelayMs: 100, // every reconnect waits at least this long...
  initialDelayMs: 300, // ...and at most this long the first time, doubling after each failure
  maxDelayMs: 30_000, // ...up to this cap
  stableAfterMs: 10_000, // a connection open this long resets the backoff
  // Frames sent are paced below the gateway's GATEWAY_RATE_BURST / GATEWAY_RATE_LIMIT (100, 50)
  // so that resubscribing many channels at once is not refused.
  frameBurst: 50,
  framesPerSecond: 20,
  WebSocket: undefined, // constructor to use instead of globalThis.WebSocket
});

/**
 * The close codes the gateway sends and what the client does after each: "retry" (reconnect
 * after the backoff) or "never" (the session cannot be used again). The same table as the
 * gateway's `notify_wire.codes.CLOSE_CODES` and docs/protocol.md (a test compares them);
 * a code not in it (1006: the link dropped) is retried.
 */
export const CLOSE_CODES = Object.freeze({
  1001: { name: "GOING_AWAY", reconnect: "retry" },
  1002: { name: "PROTOCOL_ERROR", reconnect: "retry" },
  1007: { name: "INVALID_DATA", reconnect: "retry" },
  1009: { name: "TOO_BIG", reconnect: "retry" },
  1011: { name: "INTERNAL_ERROR", reconnect: "retry" },
  1013: { name: "TRY_AGAIN_LATER", reconnect: "retry" },
  4001: { name: "UNAUTHORIZED", reconnect: "never" },
  4008: { name: "SLOW_CONSUMER", reconnect: "retry" },
  4029: { name: "RATE_LIMITED", reconnect: "retry" },
});

/** An error reply of the gateway (`code` as in docs/protocol.md) or of this client. */
export class NotifyError extends Error {
  constructor(code, message, channel = undefined) {
    super(message);
    this.name = "NotifyError";
    this.code = code;
    this.channel = channel;
  }
}

/**
 * One logical connection to the gateway, kept open across network loss and restarts until
 * `close()` or a 4001 (unauthorized). Events (EventTarget, details in `event.detail`, or
 * `client.on(type, detail => ...)`): open, close, state, error, unauthorized, gap,
 * subscribed, message.
 */
export class NotifyClient extends EventTarget {
  #url;
  #token;
  #options;
  #state = "connecting";
  #ws = null;
  // channel -> {handlers, confirmed, resubscribing, waiters, position, delivered}
  #channels = new Map();
  #pending = new Map(); // ref -> {kind, channel?, entry?, resolve?, reject?}
  #nextRef = 1;
  #attempt = 0;
  #everOpened = false;
  #openedAt = 0;
  #lastFrameAt = 0;
  #outbox = []; // serialized frames waiting for the pacer
  #tokens = 0;
  #refilledAt = 0;
  #flushTimer = undefined;
  #retryTimer = undefined;
  #connectTimer = undefined;
  #pingTimer = undefined;
  #pongTimer = undefined;
  #onOnline = () => this.#retryNow();

  /**
   * @param {string | URL} url the gateway's WebSocket endpoint, `ws[s]://host:port/ws`
   * @param {{token: string} & Partial<typeof DEFAULTS>} options
   */
  constructor(url, options) {
    super();
    const { token, ...rest } = options ?? {};
    if (typeof token !== "string" || token === "") {
      throw new TypeError("NotifyClient: options.token must be a non-empty string");
    }
    const parsed = new URL(url);
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(
        `NotifyClient: url must start with ws:// or wss://, not ${parsed.protocol}`,
      );
    }
    this.#url = parsed.href;
    this.#token = token;
    this.#options = { ...DEFAULTS, ...rest };
    this.#options.WebSocket ??= globalThis.WebSocket;
    if (typeof this.#options.WebSocket !== "function") {
      throw new TypeError("NotifyClient: no WebSocket here: pass options.WebSocket");
    }
    this.#tokens = this.#options.frameBurst;
    this.#refilledAt = Date.now();
    globalThis.addEventListener?.("online", this.#onOnline);
    // Connect after the caller has had a chance to add listeners.
    queueMicrotask(() => {
      if (this.#state !== "closed") {
        this.#emit("state", { state: "connecting", previous: null });
        this.#openSocket();
      }
    });
  }

  /** "connecting", "open", "reconnecting" or "closed" (final). */
  get state() {
    return this.#state;
  }

  /** The channels this client holds (confirmed or waiting to be). */
  get channels() {
    return [...this.#channels.keys()];
  }

  /**
   * Listen to `type`; `listener` gets the event's detail. Returns a function that removes it.
   */
  on(type, listener) {
    const wrapped = (event) => listener(event.detail);
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  /**
   * Where this client stands in `channel`'s history, `{offset, epoch}`, or undefined when the
   * channel has no history (or is not held).
   */
  position(channel) {
    const position = this.#channels.get(channel)?.position;
    return position == null ? undefined : { ...position };
  }

  /**
   * Subscribe to `channel`; `onMessage(data, channel, position)` gets each message (`position`
   * is `{offset, epoch}` on a channel with history, else undefined). Resolves once the
   * gateway confirms (anything published after that is delivered); rejects with a NotifyError
   * whose `code` is the gateway's (`forbidden`, `bad_request`, ...). While disconnected the
   * request waits for the next connection. The subscription is renewed after every reconnect.
   */
  subscribe(channel, onMessage) {
    if (typeof channel !== "string" || typeof onMessage !== "function") {
      return Promise.reject(new TypeError("subscribe(channel: string, onMessage: function)"));
    }
    if (this.#state === "closed") {
      return Promise.reject(new NotifyError("closed", "the client is closed", channel));
    }
    let entry = this.#channels.get(channel);
    if (entry === undefined) {
      entry = {
        handlers: new Set(),
        confirmed: false,
        resubscribing: false,
        waiters: [],
        position: null, // {offset, epoch} to resume from, on a channel with history
        delivered: null, // {offset, epoch} of the last message delivered, to drop duplicates
      };
      this.#channels.set(channel, entry);
      if (this.#state === "open") this.#sendSubscribe(channel, entry);
    }
    entry.handlers.add(onMessage);
    if (entry.confirmed) return Promise.resolve();
    return new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
  }

  /**
   * Stop `onMessage` (or, without it, every handler) receiving `channel`; the gateway is told
   * once no handler is left. Resolves when it confirms, or at once while disconnected.
   */
  unsubscribe(channel, onMessage = undefined) {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return Promise.resolve();
    if (onMessage !== undefined) {
      entry.handlers.delete(onMessage);
      if (entry.handlers.size > 0) return Promise.resolve();
    }
    this.#channels.delete(channel);
    this.#settle(entry, new NotifyError("cancelled", `unsubscribed from '${channel}'`, channel));
    if (this.#state !== "open") return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#send(
        { type: "unsubscribe", channel },
        { kind: "unsubscribe", channel, resolve, reject },
      );
    });
  }

  /** Close for good: no reconnect; pending subscriptions reject with code "closed". */
  close() {
    if (this.#state === "closed") return;
    const ws = this.#ws;
    this.#detach();
    if (ws !== null) {
      ws.close(1000, "client closed");
      this.#emit("close", {
        code: 1000,
        reason: "client closed",
        wasClean: true,
        willReconnect: false,
      });
    }
    this.#finish(new NotifyError("closed", "the client was closed"));
  }

  // -- connection lifecycle -------------------------------------------------------------

  #openSocket() {
    let ws;
    try {
      ws = new this.#options.WebSocket(this.#url);
    } catch (error) {
      // E.g. the page's Content-Security-Policy forbids this URL: retrying cannot help.
      this.#emit("error", { error });
      this.#finish(new NotifyError("refused", `cannot open a WebSocket: ${error}`));
      return;
    }
    this.#ws = ws;
    this.#connectTimer = setTimeout(
      () => this.#abandon("connect timeout"),
      this.#options.connectTimeoutMs,
    );
    ws.onopen = () => this.#send({ type: "auth", token: this.#token });
    ws.onmessage = (event) => this.#onFrame(event.data);
    // A failed socket also fires "close" (code 1006), which is where it is handled.
    ws.onclose = (event) => this.#onClosed(event.code, event.reason, event.wasClean);
  }

  /** Forget the current socket: its late events must not reach this client. */
  #detach() {
    const ws = this.#ws;
    if (ws !== null) ws.onopen = ws.onmessage = ws.onclose = null;
    this.#ws = null;
    for (const timer of [this.#connectTimer, this.#pongTimer, this.#retryTimer, this.#flushTimer]) {
      clearTimeout(timer);
    }
    clearInterval(this.#pingTimer);
    this.#connectTimer = this.#pongTimer = this.#retryTimer = this.#flushTimer = undefined;
    this.#pingTimer = undefined;
    this.#outbox = [];
    // Replies to requests on that socket will never come; an unsubscription is complete anyway.
    for (const request of this.#pending.values()) {
      if (request.kind === "unsubscribe") request.resolve();
    }
    this.#pending.clear();
    for (const entry of this.#channels.values()) {
      entry.resubscribing ||= entry.confirmed;
      entry.confirmed = false;
    }
    return ws;
  }

  /** Give up on a socket that went silent: closing it cleanly could take minutes. */
  #abandon(reason) {
    const ws = this.#detach();
    ws?.close();
    this.#afterClose(1006, reason, false);
  }

  #onClosed(code, reason, wasClean) {
    this.#detach();
    this.#afterClose(code, reason, wasClean);
  }

  #afterClose(code, reason, wasClean) {
    const stable =
      this.#state === "open" && Date.now() - this.#openedAt >= this.#options.stableAfterMs;
    if (stable) this.#attempt = 0;
    const final = CLOSE_CODES[code]?.reconnect === "never";
    this.#emit("close", { code, reason, wasClean, willReconnect: !final });
    if (final) {
      this.#emit("unauthorized", { reason });
      this.#finish(new NotifyError("unauthorized", `the gateway refused the session: ${reason}`));
    } else {
      this.#scheduleReconnect();
    }
  }

  /** Exponential backoff with jitter: uniform in [min, min(max, initial * 2^attempt)]. */
  #scheduleReconnect() {
    const { minDelayMs, initialDelayMs, maxDelayMs } = this.#options;
    const ceiling = Math.max(minDelayMs, Math.min(maxDelayMs, initialDelayMs * 2 ** this.#attempt));
    const delayMs = minDelayMs + Math.random() * (ceiling - minDelayMs);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.#setState("reconnecting", { delayMs, attempt: this.#attempt }, true);
    this.#retryTimer = setTimeout(() => this.#retryNow(), delayMs);
  }

  /** Connect at once when waiting to reconnect (the browser said it is online again). */
  #retryNow() {
    if (this.#state !== "reconnecting" || this.#ws !== null) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#openSocket();
  }

  #finish(error) {
    globalThis.removeEventListener?.("online", this.#onOnline);
    for (const entry of this.#channels.values()) this.#settle(entry, error);
    this.#channels.clear();
    this.#setState("closed");
  }

  /** Emit "state" on a change, or always with `repeat` (each scheduled retry is news). */
  #setState(state, extra = {}, repeat = false) {
    if (state === this.#state && !repeat) return;
    const previous = this.#state;
    this.#state = state;
    this.#emit("state", { state, previous, ...extra });
  }

  // -- frames -------------------------------------------------------------------------------

  /** Send a frame; with `request`, give it a fresh ref and remember what its reply settles. */
  #send(frame, request = undefined) {
    if (request !== undefined) {
      const ref = this.#nextRef++;
      this.#pending.set(ref, request);
      frame = { ...frame, ref };
    }
    this.#outbox.push(JSON.stringify(frame));
    this.#flush();
  }

  /** Send what the token bucket allows now; come back when the next token is due. */
  #flush() {
    if (this.#flushTimer !== undefined || this.#ws === null) return;
    const { frameBurst, framesPerSecond } = this.#options;
    const now = Date.now();
    this.#tokens = Math.min(
      frameBurst,
      this.#tokens + ((now - this.#refilledAt) * framesPerSecond) / 1000,
    );
    this.#refilledAt = now;
    while (this.#outbox.length > 0 && this.#tokens >= 1) {
      this.#tokens -= 1;
      this.#ws.send(this.#outbox.shift());
    }
    if (this.#outbox.length > 0) {
      const waitMs = ((1 - this.#tokens) * 1000) / framesPerSecond;
      this.#flushTimer = setTimeout(() => {
        this.#flushTimer = undefined;
        this.#flush();
      }, waitMs);
    }
  }

  #sendSubscribe(channel, entry) {
    const frame = { type: "subscribe", channel };
    // Resume where we stopped: the gateway replays what was missed, or says it cannot.
    if (entry.position !== null) frame.since = { ...entry.position };
    this.#send(frame, { kind: "subscribe", channel, entry });
  }

  #onFrame(text) {
    this.#lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      frame = null;
    }
    if (frame === null || typeof frame !== "object") {
      this.#emit("error", {
        error: new NotifyError("bad_frame", "the gateway sent a frame that is not a JSON object"),
      });
      return;
    }
    const request = frame.ref === undefined ? undefined : this.#pending.get(frame.ref);
    if (request !== undefined) this.#pending.delete(frame.ref);
    switch (frame.type) {
      case "message":
        this.#onMessage(frame);
        break;
      case "welcome":
        this.#onWelcome(frame);
        break;
      case "subscribed":
        if (request !== undefined) this.#onSubscribed(request, frame);
        break;
      case "unsubscribed":
        request?.resolve();
        break;
      case "pong":
        clearTimeout(this.#pongTimer);
        this.#pongTimer = undefined;
        break;
      case "gap":
        if (this.#channels.has(frame.channel))
          this.#emit("gap", { channel: frame.channel, reason: "gateway" });
        break;
      case "error":
        this.#onError(new NotifyError(frame.code, frame.message, request?.channel), request);
        break;
      default:
        break; // newer gateways may add frames: ignore what we do not know
    }
  }

  #onWelcome(frame) {
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.#openedAt = Date.now();
    const reconnected = this.#everOpened;
    this.#everOpened = true;
    this.#setState("open");
    for (const [channel, entry] of this.#channels) this.#sendSubscribe(channel, entry);
    this.#pingTimer = setInterval(() => this.#ping(), this.#options.pingIntervalMs);
    this.#emit("open", {
      user: frame.user,
      conn: frame.conn,
      heartbeat: frame.heartbeat,
      reconnected,
    });
  }

  #onSubscribed({ channel, entry }, frame) {
    if (this.#channels.get(channel) !== entry) return; // unsubscribed meanwhile
    entry.confirmed = true;
    const resubscribed = entry.resubscribing;
    entry.resubscribing = false;
    const { recovered } = frame;
    const latest = positionOf(frame); // the channel's, null without history
    // Recovered: the missed messages follow and move the position on. Otherwise go on from the
    // channel's current position.
    if (recovered !== true) entry.position = latest;
    this.#settle(entry);
    const detail = { channel, resubscribed, ...latest };
    if (typeof recovered === "boolean") detail.recovered = recovered;
    this.#emit("subscribed", detail);
    if (recovered === false) {
      // Messages were missed and the gateway cannot replay them: the app must refetch.
      this.#emit("gap", { channel, reason: "not_recovered", ...latest });
    } else if (resubscribed && recovered === undefined) {
      // No history to resume from: messages published while we were away are lost.
      this.#emit("gap", { channel, reason: "reconnect" });
    }
  }

  #onError(error, request) {
    if (request?.kind === "subscribe" && this.#channels.get(request.channel) === request.entry) {
      this.#channels.delete(request.channel);
      if (request.entry.waiters.length > 0) {
        this.#settle(request.entry, error);
        return;
      }
    } else if (request?.kind === "unsubscribe") {
      request.reject(error);
      return;
    } else if (request?.kind === "ping") {
      return; // a reply, even a refusal, proves the link is alive
    }
    this.#emit("error", { error, channel: error.channel });
  }

  #onMessage({ channel, data, ...frame }) {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return; // unsubscribed while the message was on its way
    const position = positionOf(frame);
    if (position === null) {
      this.#deliver(entry, channel, data, undefined);
      return;
    }
    const { delivered } = entry;
    // A replay and a live copy can overlap in a gateway we do not control: deliver once.
    if (delivered?.epoch === position.epoch && position.offset <= delivered.offset) return;
    entry.delivered = position;
    // Messages buffered during a subscribe may be older than the position it reported.
    const current = entry.position;
    if (current?.epoch !== position.epoch || position.offset > current.offset) {
      entry.position = position;
    }
    this.#deliver(entry, channel, data, position);
  }

  #deliver(entry, channel, data, position) {
    this.#emit("message", { channel, data, ...position });
    for (const handler of entry.handlers) {
      try {
        handler(data, channel, position && { ...position });
      } catch (error) {
        this.#emit("error", { error, channel });
        globalThis.reportError?.(error);
      }
    }
  }

  #ping() {
    if (this.#pongTimer !== undefined) return;
    const sentAt = Date.now();
    this.#send({ type: "ping" }, { kind: "ping" });
    this.#pongTimer = setTimeout(() => {
      this.#pongTimer = undefined;
      // Any frame after the ping shows the link works, even if the pong is queued behind it.
      if (this.#lastFrameAt < sentAt) this.#abandon("no pong");
    }, this.#options.pingTimeoutMs);
  }

  /** Resolve (no error) or reject every promise waiting on a subscription. */
  #settle(entry, error = undefined) {
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const { resolve, reject } of waiters) {
      if (error === undefined) resolve();
      else reject(error);
    }
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The `{offset, epoch}` a gateway frame carries, or null (a channel without history). */
function positionOf({ offset, epoch }) {
  return Number.isSafeInteger(offset) && typeof epoch === "string" ? { offset, epoch } : null;
}
