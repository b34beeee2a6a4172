// Type declarations for notify-client.js (the notify-gateway browser client, docs/browser.md).

/** "connecting" (first try), "open" (welcomed), "reconnecting" (waiting or retrying), "closed". */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Where a message stands in its channel's history (docs/protocol.md, "History and recovery"). */
export interface Position {
  /** Grows by one per message of the channel. */
  offset: number;
  /** The stream's life: a new epoch means the history was recreated and messages were lost. */
  epoch: string;
}

/**
 * Called with each message's `data` (the published JSON, or a string when it was not JSON) and,
 * on a channel published with history, its position.
 */
export type MessageHandler<T = unknown> = (
  data: T,
  channel: string,
  position: Position | undefined,
) => void;

/** What the client does after a close code: reconnect after the backoff, or stop. */
export type Reconnect = "retry" | "never";

/** The gateway's close codes (docs/protocol.md) and the client's policy for each. */
export declare const CLOSE_CODES: Readonly<Record<number, { name: string; reconnect: Reconnect }>>;

export interface NotifyClientTuning {
  /** Application ping interval while open (default 15000 ms). */
  pingIntervalMs: number;
  /** No pong, nor any other frame, this long after a ping: the link is dead (default 10000 ms). */
  pingTimeoutMs: number;
  /** From opening the socket to the gateway's `welcome` (default 10000 ms). */
  connectTimeoutMs: number;
  /** Every reconnect waits at least this long (default 100 ms). */
  minDelayMs: number;
  /** Upper bound of the first reconnect delay, doubled after each failure (default 300 ms). */
  initialDelayMs: number;
  /** Cap of the reconnect delay (default 30000 ms). */
  maxDelayMs: number;
  /** A connection open this long resets the backoff (default 10000 ms). */
  stableAfterMs: number;
  /** Frames the client sends in a burst before pacing (default 50). */
  frameBurst: number;
  /** Sustained frames per second the client sends (default 20). */
  framesPerSecond: number;
  /** WebSocket constructor to use (default `globalThis.WebSocket`). */
  WebSocket: typeof WebSocket | undefined;
}

export interface NotifyClientOptions extends Partial<NotifyClientTuning> {
  /** The session token; sent in the first frame, never in the URL. */
  token: string;
}

export declare const DEFAULTS: Readonly<NotifyClientTuning>;

/** An error reply of the gateway, or of the client itself. */
export declare class NotifyError extends Error {
  constructor(code: string, message: string, channel?: string);
  /**
   * The gateway's code (`forbidden`, `bad_request`, `too_many_subscriptions`, `rate_limited`,
   * `unavailable`) or the client's: `closed`, `unauthorized`, `refused`, `cancelled`, `bad_frame`.
   */
  readonly code: string;
  /** The channel the error is about, when there is one. */
  readonly channel: string | undefined;
}

export interface OpenDetail {
  user: string;
  conn: string;
  heartbeat: number;
  /** False for the first connection, true after a reconnect. */
  reconnected: boolean;
}

export interface CloseDetail {
  /** The WebSocket close code; 1006 also when the client gave up on a silent link. */
  code: number;
  reason: string;
  wasClean: boolean;
  willReconnect: boolean;
}

export interface StateDetail {
  state: ConnectionState;
  previous: ConnectionState | null;
  /** With "reconnecting": how long until the next attempt, and which attempt it is. */
  delayMs?: number;
  attempt?: number;
}

export interface ErrorDetail {
  error: unknown;
  channel?: string;
}

export interface UnauthorizedDetail {
  reason: string;
}

export interface GapDetail extends Partial<Position> {
  channel: string;
  /**
   * Messages on `channel` may have been missed; refetch.
   * "reconnect": this client was disconnected and the channel has no history;
   * "not_recovered": the channel has history but the gateway could not replay from the last
   * position (epoch changed, offset out of the window, too many missed), with the channel's
   * current position when it has one;
   * "gateway": the gateway lost Redis for a while (channels without history).
   */
  reason: "reconnect" | "not_recovered" | "gateway";
}

export interface SubscribedDetail extends Partial<Position> {
  channel: string;
  /** True when confirmed again after a reconnect. */
  resubscribed: boolean;
  /**
   * Present when the client resumed from a position: true when the missed messages follow
   * (no gap), false when they cannot (a `gap` with reason "not_recovered" follows).
   */
  recovered?: boolean;
}

export interface MessageDetail extends Partial<Position> {
  channel: string;
  data: unknown;
}

export interface NotifyClientEventMap {
  open: OpenDetail;
  close: CloseDetail;
  state: StateDetail;
  error: ErrorDetail;
  unauthorized: UnauthorizedDetail;
  gap: GapDetail;
  subscribed: SubscribedDetail;
  message: MessageDetail;
}

export declare class NotifyClient extends EventTarget {
  constructor(url: string | URL, options: NotifyClientOptions);
  readonly state: ConnectionState;
  /** The channels held, confirmed or waiting to be. */
  readonly channels: string[];
  /** Where the client stands in `channel`'s history; undefined without history. */
  position(channel: string): Position | undefined;
  subscribe<T = unknown>(channel: string, onMessage: MessageHandler<T>): Promise<void>;
  unsubscribe(channel: string, onMessage?: MessageHandler<never>): Promise<void>;
  /** Listen with the event's detail; returns a function that removes the listener. */
  on<K extends keyof NotifyClientEventMap>(
    type: K,
    listener: (detail: NotifyClientEventMap[K]) => void,
  ): () => void;
  addEventListener<K extends keyof NotifyClientEventMap>(
    type: K,
    listener: (event: CustomEvent<NotifyClientEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof NotifyClientEventMap>(
    type: K,
    listener: (event: CustomEvent<NotifyClientEventMap[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Close for good: no reconnect; pending subscriptions reject with code "closed". */
  close(): void;
}
