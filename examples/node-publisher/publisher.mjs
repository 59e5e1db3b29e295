// linkpipe from Node with the official `nats` client: publish a sign-in
// request (actions.signin.requested) with Nats-Msg-Id set to its event id,
// then follow what became of it on the LINKS stream: the issued event that
// names the link (its cause_event_id is our event id), then every event of
// that link (sent, touched, used, ...) until one of UNTIL arrives.
//
// The payload's shape is events/schema/actions.signin.requested.json; each
// lifecycle event's is events/schema/links.<type>.json. Output: one JSON
// object per line, so a program (or examples/node-publisher/publisher_test.go)
// can read it.
//
// Settings (environment):
//   NATS_URL     the NATS server (default nats://127.0.0.1:4222, `linkpipe dev`'s)
//   PRACTICE_ID  default "demo" (`linkpipe dev`'s practice)
//   CLIENT_ID, CLIENT_EMAIL, CLIENT_NAME   who the link is for
//   EVENT_ID     the idempotency key (default: a random one)
//   UNTIL        comma-separated lifecycle types to stop at (default "sent,failed")
//   TIMEOUT_MS   how long to wait for each event (default 20000)
import { connect, DeliverPolicy, JSONCodec } from "nats";
import { randomUUID } from "node:crypto";

const env = process.env;
const settings = {
  url: env.NATS_URL || "nats://127.0.0.1:4222",
  practiceId: env.PRACTICE_ID || "demo",
  clientId: env.CLIENT_ID || "node-client-1",
  email: env.CLIENT_EMAIL || "node.client@example.com",
  name: env.CLIENT_NAME || "Node Client",
  eventId: env.EVENT_ID || "node-" + randomUUID(),
  until: (env.UNTIL || "sent,failed").split(",").filter(Boolean),
  timeoutMs: Number(env.TIMEOUT_MS || 20000),
};

const json = JSONCodec();
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// next returns the next message of an ordered consumer, or fails after
// the timeout (even if the client's own wait does not return).
async function next(consumer, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${settings.timeoutMs} ms`)), settings.timeoutMs);
  });
  try {
    for (;;) {
      const m = await Promise.race([consumer.next({ expires: 5000 }), timeout]);
      if (m) return m;
    }
  } finally {
    clearTimeout(timer);
  }
}

const nc = await connect({ servers: settings.url, name: "linkpipe-node-publisher" });
try {
  const js = nc.jetstream();

  // Start reading issued events from a little before we publish (stream
  // time), so ours cannot slip past; we pick ours by cause_event_id.
  const issued = await js.consumers.get("LINKS", {
    filterSubjects: "links.*.issued",
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: new Date(Date.now() - 5000).toISOString(),
  });

  const action = {
    event_id: settings.eventId,
    practice_id: settings.practiceId,
    client: { id: settings.clientId, email: settings.email, name: settings.name },
    return_to: "/appointments",
  };
  // Nats-Msg-Id is the event id: JetStream keeps one copy of a retried
  // publish, so linkpipe mints one link and sends one email.
  for (let attempt = 1; attempt <= 2; attempt++) {
    const ack = await js.publish("actions.signin.requested", json.encode(action), { msgID: action.event_id });
    out({ published: "actions.signin.requested", event_id: action.event_id, attempt, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate });
  }

  let linkId;
  while (!linkId) {
    const m = await next(issued, "issued event for " + action.event_id);
    const ev = json.decode(m.data);
    if (ev.cause_event_id === action.event_id) {
      linkId = ev.link_id;
    }
  }

  // Every event of that link, from the start of the stream (an ordered
  // consumer's default; nats 2.29.3 hangs when deliver_policy "all" is
  // given explicitly).
  const events = await js.consumers.get("LINKS", { filterSubjects: `links.${linkId}.>` });
  for (;;) {
    const m = await next(events, `one of ${settings.until.join(", ")} for link ${linkId}`);
    const ev = json.decode(m.data);
    out({ subject: m.subject, event: ev });
    if (settings.until.includes(ev.type)) break;
  }
} finally {
  await nc.drain();
}
