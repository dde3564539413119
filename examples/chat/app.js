// The chat page: pick a name and a room, chat, see who is online.
//
// One Phoenix socket to the shard that served the page (same host, so the
// shard's Origin check passes with no configuration), one channel
// "room:<name>" joined with a presence, messages as "say" broadcasts.
// phoenix.js reconnects and rejoins by itself after a shard goes away; the
// page only shows it: "connecting" until the first join, "online" while
// joined, "reconnecting" from a lost socket or channel until the rejoin.
import { Presence, Socket } from "./phoenix.mjs";

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $("connection"),
  joinForm: $("join-form"),
  name: $("name"),
  room: $("room"),
  chat: $("chat"),
  roomName: $("room-name"),
  messages: $("messages"),
  online: $("online"),
  sendForm: $("send-form"),
  message: $("message"),
};

function setConnection(state, detail = "") {
  ui.connection.dataset.state = state;
  ui.connection.textContent = detail ? `${state}: ${detail}` : state;
  document.body.dataset.connection = state;
}

// Text only: a message never becomes markup.
function addMessage({ from = "", text, kind = "" }) {
  const li = document.createElement("li");
  if (kind) li.className = kind;
  if (from) {
    const who = document.createElement("span");
    who.className = "from";
    who.textContent = from;
    li.append(who);
  }
  li.append(document.createTextNode(text));
  ui.messages.append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function renderOnline(presence, me) {
  const names = presence.list((name) => name).sort();
  ui.online.replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      li.textContent = name === me ? `${name} (you)` : name;
      return li;
    }),
  );
}

function join(name, room) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new Socket(`${scheme}://${location.host}/socket`);
  // Where this page is in the room's history ({epoch, offset}): every
  // rejoin asks for what was said meanwhile (phoenix.js re-evaluates the
  // params closure each time) and the server pushes it before anything new.
  let position = null;
  let recovering = 0;
  const seen = (ref) => {
    const offset = Number(ref);
    if (position && Number.isInteger(offset) && offset > position.offset) position.offset = offset;
  };
  const channel = socket.channel(`room:${room}`, () => ({
    presence: { key: name, meta: { since: Date.now() } },
    ...(position ? { recover: position } : {}),
  }));
  const presence = new Presence(channel);
  let joinedOnce = false;
  const lost = () => setConnection(joinedOnce ? "reconnecting" : "connecting");

  setConnection("connecting");
  socket.onError(lost);
  socket.onClose(lost);
  channel.onError(lost);
  presence.onSync(() => renderOnline(presence, name));
  channel.on("say", ({ from, text }, ref) => {
    seen(ref);
    addMessage({ from: String(from), text: String(text), kind: recovering > 0 ? "recovered" : "" });
    if (recovering > 0) recovering -= 1;
  });
  channel
    .join()
    // Runs again on every rejoin: phoenix.js resends the same join.
    .receive("ok", (r = {}) => {
      const recovered = Boolean(r.recovered && position);
      if (joinedOnce) {
        recovering = recovered ? r.offset - position.offset : 0;
        addMessage({
          text: recovered
            ? `reconnected: recovered ${recovering} messages`
            : "reconnected (messages sent meanwhile were missed)",
          kind: "notice",
        });
      }
      if (r.epoch !== undefined && !recovered) position = { epoch: r.epoch, offset: r.offset };
      joinedOnce = true;
      setConnection("online");
    })
    .receive("error", ({ reason } = {}) => setConnection("refused", reason || "join refused"))
    .receive("timeout", lost);
  socket.connect();

  ui.roomName.textContent = room;
  ui.joinForm.hidden = true;
  ui.chat.hidden = false;
  ui.message.focus();

  // Enter submits the form. The sender gets no copy of its own broadcast,
  // only the reply: the line is shown at once and marked if it failed.
  ui.sendForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.message.value.trim();
    if (!text) return;
    ui.message.value = "";
    const line = addMessage({ from: name, text, kind: "mine" });
    channel
      .push("say", { from: name, text })
      .receive("ok", (r = {}) => seen(String(r.offset)))
      .receive("error", ({ reason } = {}) => {
        line.classList.add("failed");
        line.title = `not sent: ${reason || "refused"}`;
      })
      .receive("timeout", () => {
        line.classList.add("failed");
        line.title = "not sent: no answer";
      });
  });
}

ui.name.value = sessionStorage.getItem("chat.name") || "";
ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = ui.name.value.trim();
  const room = ui.room.value.trim();
  if (!name || !room) return;
  sessionStorage.setItem("chat.name", name);
  join(name, room);
});
