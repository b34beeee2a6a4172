// The demo page served at GET /: a NotifyClient driven by a form. Everything shown is set with
// textContent, never parsed as HTML: message data comes from whoever can publish.
import { NotifyClient } from "/client.js";

const MAX_SHOWN = 200; // rows kept per list; older ones are dropped from the page

const $ = (id) => document.getElementById(id);
const wsUrl = new URL("/ws", location.href);
wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";

let client = null;
let received = 0;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className !== undefined) node.className = className;
  return node;
}

function prepend(list, item) {
  list.prepend(item);
  while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
}

function now() {
  return el("time", new Date().toLocaleTimeString());
}

function logEvent(text) {
  const item = el("li");
  item.append(now(), " ", text);
  prepend($("events"), item);
}

function showMessage(data, channel, position) {
  received += 1;
  $("count").textContent = String(received);
  const item = el("li");
  item.append(now(), " ", el("span", channel, "channel"));
  // On a channel with history: the offset the client resumes from after a reconnect.
  if (position !== undefined) {
    const offset = el("span", `#${position.offset}`, "offset");
    offset.title = `epoch ${position.epoch}`;
    item.append(" ", offset);
  }
  item.append(el("pre", JSON.stringify(data, null, 2)));
  prepend($("messages"), item);
}

function channelRow(channel) {
  return $("channel-list").querySelector(`li[data-channel="${CSS.escape(channel)}"]`);
}

function setStatus(channel, status) {
  const row = channelRow(channel);
  if (row === null) return;
  row.dataset.status = status;
  row.querySelector(".status").textContent = status;
}

function addChannel(channel) {
  if (client === null || channel === "" || channelRow(channel) !== null) return;
  const row = el("li");
  row.dataset.channel = channel;
  const remove = el("button", "×");
  remove.type = "button";
  remove.title = `unsubscribe from ${channel}`;
  remove.addEventListener("click", () => {
    client
      ?.unsubscribe(channel)
      .catch((error) => logEvent(`unsubscribe ${channel}: ${error.message}`));
    row.remove();
    logEvent(`unsubscribed from ${channel}`);
  });
  row.append(el("code", channel), el("span", "", "status"), remove);
  $("channel-list").append(row);
  setStatus(channel, "pending");
  client.subscribe(channel, showMessage).catch((error) => {
    if (error.code === "cancelled" || error.code === "closed") return; // we asked for it
    setStatus(channel, `error: ${error.code}`);
    row.dataset.status = "error";
    logEvent(`subscribe ${channel} refused: ${error.message}`);
  });
}

function showState(state) {
  $("state").dataset.state = state;
  $("state").textContent = state;
  const connected = state !== "closed";
  $("connect").disabled = connected;
  $("disconnect").disabled = !connected;
  $("add").disabled = !connected;
}

function connect(token, channels) {
  client?.close();
  $("channel-list").replaceChildren();
  $("notice").hidden = true;
  client = new NotifyClient(wsUrl, { token });
  client.on("state", ({ state }) => showState(state));
  client.on("open", ({ user, conn, reconnected }) =>
    logEvent(`${reconnected ? "reconnected" : "connected"} as user ${user} (conn ${conn})`),
  );
  client.on("close", ({ code, reason, willReconnect }) => {
    logEvent(
      `closed ${code}${reason ? ` (${reason})` : ""}${willReconnect ? ", reconnecting" : ""}`,
    );
    for (const row of $("channel-list").children) {
      if (row.dataset.status === "subscribed" || row.dataset.status === "waiting") {
        setStatus(row.dataset.channel, willReconnect ? "waiting" : "stopped");
      }
    }
  });
  client.on("subscribed", ({ channel, recovered, offset }) => {
    setStatus(channel, "subscribed");
    if (recovered) logEvent(`resumed ${channel} from history: nothing missed (now at #${offset})`);
  });
  client.on("gap", ({ channel, reason }) =>
    logEvent(`gap on ${channel} (${reason}): messages may be missing`),
  );
  client.on("error", ({ error }) => logEvent(`error: ${error.message}`));
  client.on("unauthorized", () => {
    $("notice").textContent =
      "unauthorized: the session is unknown, expired or revoked. Log in again and enter a new token.";
    $("notice").hidden = false;
  });
  for (const channel of channels) addChannel(channel);
}

$("connect-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const channels = $("channels")
    .value.split(",")
    .map((c) => c.trim())
    .filter(Boolean);
  connect($("token").value.trim(), channels);
});

$("disconnect").addEventListener("click", () => {
  client?.close();
  client = null;
  logEvent("disconnected");
});

$("add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  addChannel($("add-channel").value.trim());
  $("add-channel").value = "";
});
