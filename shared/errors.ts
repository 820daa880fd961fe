/**
 * Every error FieldStream reports, in one registry.
 *
 * The code is the stable part: it travels to the device in an error frame, into every log line
 * and into the tests, which assert on codes and never on message text. The description says what
 * happened in words a user can act on. `http` is the status the HTTP endpoints answer with (for a
 * code that is only logged, the status an endpoint would answer with). `transient` says whether the
 * same thing, sent again later, can succeed (true: send again, as the field client does) or not
 * (false: final; sending it again gives the same answer until something is changed).
 *
 * Every code here is emitted somewhere, and every code emitted is here; docs/errors.md documents
 * each one (who emits it, what to do), and test/unit/errors-doc.test.ts keeps the three in step.
 */
export interface ErrorSpec {
  readonly http: number;
  readonly transient: boolean;
  readonly description: string;
}

export const ERRORS = {
  // -- The message contract (device frames and broker payloads) --------------------------------
  CONTRACT_MALFORMED_JSON: { http: 400, transient: false, description: 'The frame is not valid JSON text.' },
  CONTRACT_BINARY_FRAME: { http: 400, transient: false, description: 'Binary WebSocket frames are not accepted; send JSON text.' },
  CONTRACT_FRAME_TOO_LARGE: { http: 413, transient: false, description: 'The frame is larger than the gateway accepts.' },
  CONTRACT_UNKNOWN_DATA_TYPE: {
    http: 400,
    transient: false,
    description: 'dataType must be one of "timeseries", "file", "event", "response", "health".',
  },
  CONTRACT_INVALID_MESSAGE: { http: 400, transient: false, description: 'The message does not match the FieldStream message contract.' },
  CONTRACT_BATCH_TOO_LARGE: { http: 413, transient: false, description: 'The batch holds more messages than the gateway accepts.' },
  CONTRACT_UNSAFE_FILENAME: {
    http: 400,
    transient: false,
    description: 'The file name is not a plain file name (no paths, no "..", no control characters (C0, DEL, C1), well-formed Unicode in normal form C, at most 200 bytes).',
  },
  CONTRACT_RESULT_TOO_MANY_VALUES: {
    http: 413,
    transient: false,
    description: "The command response's result holds more JSON values and containers than a response carries (LIMITS.commandResultMaxValues).",
  },
  CONTRACT_INVALID_FILE_DATA: { http: 400, transient: false, description: 'The file data is not valid base64 or is larger than accepted.' },
  CONTRACT_INVALID_TOPIC: { http: 400, transient: false, description: 'The MQTT topic is not a FieldStream topic.' },
  CONTRACT_INVALID_ENVELOPE: { http: 400, transient: false, description: 'The MQTT payload is not a valid FieldStream envelope.' },

  // -- Gateway ------------------------------------------------------------------------------------
  GATEWAY_NO_CLIENT_CERTIFICATE: { http: 401, transient: false, description: 'The connection carries no verified client certificate.' },
  GATEWAY_NOT_A_DEVICE_CERTIFICATE: {
    http: 403,
    transient: false,
    description: 'The client certificate is not a device certificate (its CN is not a valid device id or its OU is not "devices").',
  },
  GATEWAY_UNTRUSTED_PROXY: {
    http: 403,
    transient: false,
    description: 'Only the edge proxy may connect to a gateway that runs behind it.',
  },
  GATEWAY_DEVICE_MISMATCH: {
    http: 403,
    transient: false,
    description: "The message's deviceId differs from the device id in the client certificate.",
  },
  GATEWAY_BROKER_UNAVAILABLE: {
    http: 503,
    transient: true,
    description: 'The message could not be handed to the broker, or the broker had no subscriber for it (the internal network has not connected to it); it was not acknowledged, send it again.',
  },
  GATEWAY_INTERNAL: {
    http: 500,
    transient: true,
    description: 'Handling a frame failed in a way the gateway did not foresee (a bug): the connection was closed (1011), the gateway and every other connection went on; nothing from that frame was acknowledged.',
  },
  GATEWAY_RATE_LIMITED: {
    http: 429,
    transient: true,
    description: 'This device sends faster than its rate limit; the frame was not accepted, send it again later.',
  },
  GATEWAY_UNFINISHED_FRAMES_FULL: { http: 503, transient: true, description: 'Devices together keep more of unfinished messages buffered than the gateway holds: the connection keeping the most was closed (1013); send again later.' },
  GATEWAY_TOO_MANY_PENDING: { http: 503, transient: true, description: 'The gateway holds as many connections in their handshake or upgrade as it accepts: this one was closed as it was accepted; try again later.' },
  GATEWAY_RECONNECTING_TOO_FAST: {
    http: 429,
    transient: true,
    description: 'This device opened more connections to the gateway in a short time than it may; try again in a few seconds.',
  },
  GATEWAY_TOO_MANY_CONNECTIONS: { http: 503, transient: true, description: 'The gateway holds as many connections as it accepts; try again later.' },
  GATEWAY_SUPERSEDED: { http: 409, transient: false, description: 'Another connection of the same device replaced this one.' },
  GATEWAY_WRONG_PATH: { http: 404, transient: false, description: 'The WebSocket endpoint is at another path.' },
  GATEWAY_UPGRADE_INVALID: { http: 400, transient: false, description: 'The upgrade request is no valid WebSocket handshake (RFC 6455 §4.2.1): not a GET, or its Upgrade, Sec-WebSocket-Key, Sec-WebSocket-Version or Sec-WebSocket-Protocol header is missing or malformed.' },
  GATEWAY_ACKS_HEADER_INVALID: { http: 400, transient: false, description: 'The upgrade request\'s X-FieldStream-Acks header is neither "all" nor "none" (given once).' },
  GATEWAY_SLOW_CONSUMER: {
    http: 408,
    transient: true,
    description: 'The device stopped reading what the gateway sends (acks, receipts, commands) and its backlog passed the send-buffer limit; the gateway disconnected it. Unacknowledged messages are sent again after reconnecting; if it repeats, check the device\'s network and load.',
  },
  GATEWAY_SOCKET_ERROR: {
    http: 400,
    transient: true,
    description: "The device's WebSocket broke the protocol (the ws library's own code is logged as wsCode, e.g. invalid UTF-8 or a bad opcode) and the connection was closed; the device reconnects and sends again what was not acknowledged. If it repeats, look at the device's WebSocket library or a proxy in between.",
  },

  // -- Distributor --------------------------------------------------------------------------------
  DISTRIBUTOR_UNSAFE_FILENAME: {
    http: 400,
    transient: false,
    description: 'A file name that would leave the storage folder was refused; nothing was written.',
  },
  DISTRIBUTOR_WRITE_FAILED: {
    http: 503,
    transient: true,
    description: 'Writing to the database or file storage failed; the message stays unacknowledged and is retried.',
  },
  DISTRIBUTOR_WRITE_REJECTED: {
    http: 400,
    transient: false,
    description: 'The database refused the data permanently; it was kept in the dead-letter folder.',
  },
  DISTRIBUTOR_POSTGRES_TRANSACTION_SHRUNK: {
    http: 503,
    transient: true,
    description: 'PostgreSQL transactions were past POSTGRES_TIMEOUT_MS and were written again in halves; the following ones are smaller, growing back as they commit in time.',
  },

  DISTRIBUTOR_DEAD_LETTERS_FULL: {
    http: 507,
    transient: true,
    description:
      'The dead-letter folder holds DEAD_LETTER_MAX_BYTES: a message that can never be written but carries data is not acknowledged until there is room (it stays in the broker, its device keeps its copy); an invalid payload is counted and dropped.',
  },
  DISTRIBUTOR_DEAD_LETTER_TOO_LARGE: {
    http: 507,
    transient: false,
    description:
      'A message that can never be written but carries data makes a dead letter larger than DEAD_LETTER_MAX_BYTES as a whole: no room made can hold it, so it is not acknowledged (it stays in the broker, its device keeps its copy) until the bound is raised.',
  },
  DISTRIBUTOR_MESSAGE_FAILED: {
    http: 500,
    transient: false,
    description:
      'Handling a message failed with an error that has no code (a defect, not a verdict on the message) LIMITS.distributorUnexpectedMaxAttempts times in a row; it was kept whole as a dead letter and acknowledged, so that one message cannot stall its consumer connection for good.',
  },
  DISTRIBUTOR_STATE_LEASE: {
    http: 503,
    transient: true,
    description: 'The distributor could not claim a slot of DISTRIBUTOR_STATE_DIR, or lost its slot to another distributor; it stops rather than write state another one owns.',
  },
  DISTRIBUTOR_REPLAY_STATE_DAMAGED: {
    http: 500,
    transient: false,
    description:
      "At the distributor's start, lines of the replay windows' journal that failed their check, or a damaged snapshot, were skipped (the lines after them, and the snapshot before, read instead): the sequence numbers only they held may be accepted once more. An append cut short by a kill is not counted. The distributor runs on.",
  },
  DISTRIBUTOR_STATE_UNREADABLE: {
    http: 500,
    transient: true,
    description:
      'A file of DISTRIBUTOR_STATE_DIR is there but cannot be read (an I/O error, out of descriptors, permissions, a folder in its place). A replay windows\' snapshot or journal (replay/windows-N.snap, .log): the distributor does not start, as without it every number it held would be accepted again. The list of earlier consumer sessions (consumer-sessions.json, or a free slot\'s in instances/N/): it is left as it is and no session is retired until it can be read, as taken for an empty list it was rewritten without its ids, whose sessions then collected their share of the messages for good.',
  },
  DISTRIBUTOR_FILE_CHECKSUM: { http: 400, transient: false, description: 'A file reassembled from chunks does not match its SHA-256; it was not stored.' },
  DISTRIBUTOR_FILE_NAME_TAKEN: { http: 409, transient: false, description: "Every name the distributor tries for a device's file holds other content already; it was not stored." },
  DISTRIBUTOR_FILE_MARKER_DAMAGED: {
    http: 500,
    transient: false,
    description:
      "A chunked transfer's marker in the file storage (its stored file's record, .partial/DEVICE/ID.done.json, or its verdict, .failed/DEVICE/ID.json) is not what it should be: damaged, or edited by hand; or a folder or a FIFO stands in the place of a marker or of a chunk received (.partial/DEVICE/ID/N.chunk, at the join). The chunk was not stored; it is kept whole as a dead letter.",
  },
  DISTRIBUTOR_FILE_TRANSFER_REUSED: {
    http: 409,
    transient: false,
    description:
      "A chunk declares a file (its size and SHA-256) other than the one its transfer id already stored: the device used a transfer id again for other content. The chunk was not stored; it is kept whole as a dead letter.",
  },
  DISTRIBUTOR_FILE_TRANSFERS_OPEN: {
    http: 429,
    transient: true,
    description:
      'A chunk would open a file transfer while its device has LIMITS.fileOpenTransfersPerDeviceMax transfers unfinished in the file storage. The chunk was neither stored nor receipted; the device keeps the file and sends it again later.',
  },
  // -- Field client ---------------------------------------------------------------------------------
  FIELD_QUEUE_FULL: { http: 507, transient: true, description: 'The local queue is full (FIELD_QUEUE_MAX_BYTES) and its policy is to refuse new data.' },
  FIELD_QUEUE_DROPPED_OLDEST: { http: 507, transient: false, description: 'The local queue was full; its oldest segment was dropped to make room (policy drop-oldest), with what it held that was not yet committed.' },
  FIELD_DATA_DIR_IN_USE: {
    http: 409,
    transient: false,
    description:
      'Another field client holds FIELD_DATA_DIR (its field-client.lock names it, renewed every 2 s): two on one folder would append to one queue and delete what the other still sends. Stop the other, or give each its own FIELD_DATA_DIR. A lock whose holder is gone (killed, the machine restarted) is taken over at once on the same machine, after 15 s from another.',
  },
  FIELD_DATA_DIR_UNUSABLE: {
    http: 500,
    transient: false,
    description:
      'FIELD_DATA_DIR, or its queue folder, is not a folder the field client can read and write (a file in its place, no permission): the client cannot start on it. Said by fieldstream doctor; fix the path, or its owner and permissions.',
  },
  FIELD_QUEUE_CORRUPT: { http: 500, transient: false, description: 'A damaged record was found in the local queue (e.g. after a power cut); the readable data was kept.' },
  FIELD_QUEUE_WRITE_FAILED: {
    http: 507,
    transient: true,
    description: 'The local queue could not write to its disk (full, over a file size limit, read-only or failing); the messages were not accepted, and what the queue held before is kept.',
  },
  FIELD_QUEUE_NEW_EPOCH: {
    http: 200,
    transient: false,
    description:
      'The local queue was not closed cleanly and the machine has restarted since (a power cut, a kernel panic), or an fsync of the queue failed in its last run; the messages it numbers from now on have a new epoch, so a number sent before but lost from the disk is never reused.',
  },
  FIELD_STATE_WRITE_FAILED: {
    http: 507,
    transient: true,
    description:
      "The field client could not save a note that only spares work after a restart (the queue's committed watermark, ack.json; its clean-stop mark; a file transfer's progress; the queue's meta.json when no new epoch is in it; the link's measured rate, link-rate.json; the file transfers finished, transfers-finished.jsonl): a full, read-only or failing disk. Nothing is lost and the client goes on sending; a restart meanwhile may send again what the note would have skipped (recognised as copies), take a new epoch it could have spared, or report a file delivered as missing (FIELD_FILE_UNREADABLE). Written again later.",
  },
  FIELD_STATE_INVALID: {
    http: 500,
    transient: false,
    description: "A note the field client keeps only to spare work after a restart (the link's measured rate, link-rate.json; the file transfers finished, transfers-finished.jsonl; a file transfer's progress, outgoing/ID.progress, when it cannot be read or is not a decimal count as the client writes it), or the note beside a file being taken into the outbox (outgoing/ID.accepting), is damaged: what of it is damaged is ignored (the link's rate is measured again; a finished transfer's record read back reports its file missing; a transfer whose progress cannot be read is sent from its first chunk, copies recognised; the damaged note is removed, something other than a file in its place left where it is, and its file, if moved in, set aside as ID-unqueued-taking, FIELD_FILE_UNQUEUED). Nothing is lost.",
  },
  FIELD_MESSAGE_REFUSED: { http: 400, transient: false, description: 'The gateway refused a queued message permanently; it was set aside in rejected.jsonl.' },
  FIELD_REJECTED_FULL: {
    http: 507,
    transient: true,
    description:
      'The gateway refused queued messages permanently, and there is no room to set them aside: what is set aside (rejected.jsonl, rejected/) counts against FIELD_QUEUE_MAX_BYTES. They stay in the queue, unsent, until there is.',
  },
  FIELD_INPUT_INVALID: { http: 400, transient: false, description: 'A local input (HTTP, MQTT, CLI) sent data that is not a valid reading, event, file or health value.' },
  FIELD_INPUT_FROM_BROWSER: {
    http: 403,
    transient: false,
    description:
      "A web page (a browser's request: it carried an Origin header, or Sec-Fetch-Site other than none) used the local HTTP input, which takes readings, events, files and health values from programs on the device only; nothing was taken.",
  },
  FIELD_INPUT_KEY_IN_PROGRESS: {
    http: 409,
    transient: true,
    description: 'A request with this Idempotency-Key is being taken by the local HTTP input now (the first of a retried request); nothing more was taken. Sent again shortly, it is answered as the first was.',
  },
  FIELD_INPUT_KEY_REUSED: {
    http: 422,
    transient: false,
    description: 'The local HTTP input took another request (another endpoint, target or body) with this Idempotency-Key; nothing was taken. A key names one request: use a new key for a new request.',
  },
  FIELD_INPUT_KEYS_WRITE_FAILED: {
    http: 507,
    transient: true,
    description:
      "The field client could not keep an Idempotency-Key answer of its HTTP input on disk (FIELD_DATA_DIR/http-keys.jsonl: a full, read-only or failing disk), or could not rewrite that file. The request was taken and answered; its answer is kept in memory only, so a retry after a restart of the field client would be queued again. A rewrite that failed is tried again at the next answer.",
  },
  FIELD_INPUT_KEYS_DAMAGED: {
    http: 500,
    transient: false,
    description:
      "At its start the field client found lines of the file of its HTTP input's Idempotency-Key answers (FIELD_DATA_DIR/http-keys.jsonl) it cannot read (torn by a power cut, or damaged on the disk), or could not read the file at all: those are skipped, the others read. A retry of a request whose answer was on a line skipped is taken as new (queued again). The file is rewritten without them.",
  },
  FIELD_INPUT_TAKEN_WRITE_FAILED: {
    http: 507,
    transient: true,
    description:
      "The field client could not keep a publish its local MQTT input took on disk (FIELD_DATA_DIR/mqtt-taken.jsonl: a full, read-only or failing disk), or sync it. The publish was queued and acknowledged; it is known in memory only, so a copy sent again flagged DUP after a restart of the field client would be queued again.",
  },
  FIELD_INPUT_TAKEN_DAMAGED: {
    http: 500,
    transient: false,
    description:
      "At its start the field client found lines of the file of its local MQTT input's publishes taken (FIELD_DATA_DIR/mqtt-taken.jsonl) it cannot read (torn by a power cut, or damaged on the disk), or could not read the file at all: those are skipped, the others read. A copy sent again of a publish named only by a skipped line is taken as new (queued again). The file is rewritten without them.",
  },
  FIELD_STORAGE_FAILED: {
    http: 503,
    transient: true,
    description:
      "A local input could not take what was sent because the device's own storage failed under it (writing or syncing a file in incoming/ or the outbox, reading it back to hash it: ENOSPC, EIO, a folder gone); nothing was accepted.",
  },
  FIELD_INPUT_BUSY: {
    http: 503,
    transient: true,
    description:
      'The local HTTP input is reading as many readings, events and health values at once as it holds in memory (LIMITS.localInputJsonHeldMaxBytes, by their Content-Length; a body without one counts as the largest); or the local MQTT input holds as many connections (LIMITS.localMqttMaxConnections) or bytes of packets arriving (LIMITS.localMqttHeldMaxBytes) as it takes at once, and closed a connection. Nothing was accepted.',
  },
  SPARKPLUG_PAYLOAD_INVALID: {
    http: 400,
    transient: false,
    description:
      'A Sparkplug B message is not a valid Sparkplug B protobuf payload, breaks a rule of the specification (no seq, no bdSeq in a birth, a value of the wrong type), or holds more than the input decodes (4 MiB, LIMITS.sparkplugMaxMetrics metrics, LIMITS.sparkplugMaxElements elements, LIMITS.sparkplugMaxDepth levels of nesting).',
  },
  SPARKPLUG_TOPIC_INVALID: { http: 400, transient: false, description: 'A message on the Sparkplug input has a topic outside the spBv1.0 namespace form.' },
  SPARKPLUG_GROUP_NOT_FOLLOWED: {
    http: 400,
    transient: false,
    description: 'A Sparkplug message of a group FIELD_SPARKPLUG_GROUPS does not name, published on the local MQTT input (which takes every spBv1.0/ topic): acknowledged, not stored.',
  },
  SPARKPLUG_NOT_BORN: { http: 409, transient: false, description: 'Sparkplug data from an edge node or device with no current birth certificate (or awaiting its rebirth); a rebirth was requested, unless what that edge node sends keeps being refused after each rebirth (then less and less often: docs/field-client.md).' },
  SPARKPLUG_SEQ_GAP: { http: 409, transient: false, description: "A Sparkplug message's seq is not the next one of its edge node: a message was lost; a rebirth was requested." },
  SPARKPLUG_UNKNOWN_METRIC: { http: 409, transient: false, description: 'A Sparkplug data message names a metric (alias or name) its birth certificate did not declare; a rebirth was requested, less and less often when the same data follows each rebirth (docs/field-client.md).' },
  SPARKPLUG_DEATH_STALE: { http: 409, transient: false, description: "A Sparkplug NDEATH whose bdSeq is not that of the last birth taken (the will of an older connection), or of one that died already; it was ignored." },
  SPARKPLUG_DUPLICATE: {
    http: 409,
    transient: false,
    description:
      'A Sparkplug message sent again (MQTT DUP flag) that its session had read already (its seq at or behind the last one read, or a birth of a bdSeq born already): its PUBACK was lost; acknowledged and not stored again.',
  },
  SPARKPLUG_TOO_MANY_EDGE_NODES: {
    http: 507,
    transient: false,
    description: 'A Sparkplug NBIRTH of a new edge node was refused: the field client follows LIMITS.sparkplugMaxEdgeNodes edge nodes already.',
  },
  SPARKPLUG_TOO_MANY_DEVICES: {
    http: 507,
    transient: false,
    description: 'A Sparkplug DBIRTH of a new device was refused: its edge node has LIMITS.sparkplugMaxDevicesPerNode devices born already.',
  },
  SPARKPLUG_DEFINITIONS_FULL: {
    http: 507,
    transient: false,
    description:
      'A Sparkplug NBIRTH or DBIRTH was refused: the metric definitions it declares would take those the field client holds past LIMITS.sparkplugDefinitionsMaxBytes; the edge node (or device) has no current birth until a birth fits.',
  },
  SPARKPLUG_EDGE_NODE_DEFINITIONS_FULL: {
    http: 507,
    transient: false,
    description:
      "A Sparkplug NBIRTH or DBIRTH was refused: the metric definitions it declares would take those of its edge node's session past that edge node's share, LIMITS.sparkplugDefinitionsMaxBytesPerNode; the edge node (or device) has no current birth until a birth fits.",
  },
  SPARKPLUG_REORDER_TIMEOUT: {
    http: 409,
    transient: false,
    description: "Sparkplug messages held for a missing seq were discarded: it did not arrive within FIELD_SPARKPLUG_REORDER_TIMEOUT_MS; a rebirth was requested.",
  },
  SPARKPLUG_FIELD_NAME_COLLISION: {
    http: 409,
    transient: false,
    description:
      'Metrics of Sparkplug births the field client follows come out with one field name (group A.B, edge node C and group A, edge node B.C; metrics x/y and x.y): one keeps it, the others get a suffix of their own (docs/field-client.md, "Mapping"); their values are kept, except those of a metric whose suffixed name is too long or is another metric\'s own name: skipped, shown so in the line.',
  },
  SPARKPLUG_STORE_INVALID: {
    http: 500,
    transient: false,
    description:
      'A file of the Sparkplug sessions the field client saved (FIELD_DATA_DIR/sparkplug-sessions/) could not be read back at start (damaged, or past the bounds of what is held): it was dropped; what its edge nodes send again after the restart is refused as not born.',
  },
  SPARKPLUG_STORE_DROPPED: {
    http: 507,
    transient: false,
    description:
      'Sparkplug sessions the field client saved (FIELD_DATA_DIR/sparkplug-sessions/) were more, at start, than it holds (LIMITS.sparkplugDefinitionsMaxBytes, LIMITS.sparkplugMaxEdgeNodes): the edge nodes whose last session ended last were restored, the oldest dropped; what those send again after the restart is refused as not born.',
  },
  SPARKPLUG_STORE_FAILED: {
    http: 507,
    transient: true,
    description:
      'The Sparkplug sessions of the local MQTT input could not be saved (FIELD_DATA_DIR/sparkplug-sessions/ refused the write): the messages of that batch were not acknowledged, and their edge nodes send them again.',
  },
  SPARKPLUG_STATE_INVALID: { http: 400, transient: false, description: 'A Sparkplug STATE message (spBv1.0/STATE/<host_id>) is not the JSON {"online":boolean,"timestamp":number} of Sparkplug 3.0; it was ignored.' },
  SPARKPLUG_BROKER_UNAVAILABLE: { http: 503, transient: true, description: 'The Sparkplug broker (FIELD_SPARKPLUG_URL) cannot be reached or closed the connection; the field client reconnects.' },
  FIELD_FILE_UNREADABLE: { http: 400, transient: false, description: 'A file to send cannot be read.' },
  FIELD_FILE_GROWING: {
    http: 409,
    transient: true,
    description:
      'A file to send grew while it was taken into the outbox (still being written), or, moved from another file system, changed before its source was removed: it was not taken, and is left whole where it was, to be taken again once it holds still.',
  },
  FIELD_FILE_APPENDED: {
    http: 200,
    transient: false,
    description:
      'A file was written to after it was moved into the outbox (its producer still had it open), past its end or in place: what was taken was sent, and the whole file, with what came after, is set aside in FIELD_DATA_DIR/rejected/ rather than deleted.',
  },
  FIELD_FILE_NOT_REMOVED: {
    http: 507,
    transient: true,
    description:
      'A file all sent, unchanged since it was taken, cannot be removed from the outbox (FIELD_DATA_DIR/outgoing/): a read-only or failing disk. Nothing is lost; it stays there, counted against FIELD_QUEUE_MAX_BYTES, and is set aside at the next start (FIELD_FILE_UNQUEUED).',
  },
  FIELD_FILE_SOURCE_KEPT: {
    http: 200,
    transient: false,
    description:
      "A file of the watched folder was sent as a copy and left there: its folder does not let it be removed (read-only, another user's with the sticky bit, append-only). It is not taken again until it changes.",
  },
  FIELD_FILE_RECOVERED: {
    http: 200,
    transient: false,
    description: 'A file the field client had taken into its outbox when it stopped (before its queue record was written, or was on disk) was queued at the next start, as a transfer of its own (a new transfer id; `was` names the old one).',
  },
  FIELD_FILE_UNQUEUED: {
    http: 200,
    transient: false,
    description:
      'A file in the outbox (FIELD_DATA_DIR/outgoing/) that no queue record names was found at a start: it is not sent, and is set aside whole in FIELD_DATA_DIR/rejected/ as ID-unqueued rather than deleted.',
  },
  FIELD_RECEIPT_INVALID: {
    http: 401,
    transient: false,
    description: "A commit receipt whose MAC does not match this device's key, epoch and sequence numbers (forged or altered on the way); nothing was deleted.",
  },
  FIELD_RECEIPT_REPLAYED: {
    http: 409,
    transient: false,
    description: 'A genuine commit receipt that names nothing still held (a replay, or the receipt of a copy sent again); nothing was deleted.',
  },
  FIELD_COMMIT_TIMEOUT: {
    http: 504,
    transient: true,
    description: 'No commit receipt came within FIELD_COMMIT_TIMEOUT_MS of the gateway\'s ack; the messages are sent again (copies are recognised and not written twice).',
  },
  FIELD_COMMAND_TIMEOUT: { http: 504, transient: false, description: 'A command handler did not finish in time; its program was ended part way, so what it did is unknown.' },
  FIELD_COMMAND_OUTCOME_UNKNOWN: {
    http: 500,
    transient: false,
    description:
      'The command ran, or may have, but the field client cannot tell whether it completed: the client stopped while it ran (killed, a power cut: answered after the restart, which ends its exec program if that still ran; or an orderly stop that ended its program, which then did not exit 0). It is not run again. Answered with status failed, the contract\'s only final status for a command not known to have completed: check on the device whether its action took place before sending it again.',
  },
  FIELD_COMMAND_RESULT_INVALID: {
    http: 422,
    transient: false,
    description: "The command's handler gave a result no response can carry (larger than LIMITS.stringMaxChars as JSON, of more values and containers than LIMITS.commandResultMaxValues, nested deeper than LIMITS.jsonMaxDepth, or holding a \"__proto__\" key); the response keeps the handler's status, with this note as its result.",
  },
  FIELD_COMMAND_UNSIGNED: {
    http: 401,
    transient: false,
    description: 'The command carries no authentication from the command API (or the device has no signing key) and FIELD_ALLOW_UNSIGNED_COMMANDS is off; it was not run.',
  },
  FIELD_COMMAND_BAD_SIGNATURE: {
    http: 401,
    transient: false,
    description: "The command's authentication does not match its content, this device and this device's key: forged, altered or meant for another device; it was not run.",
  },
  FIELD_COMMAND_STALE: {
    http: 401,
    transient: false,
    description: 'The command was issued longer ago than FIELD_COMMAND_MAX_AGE_S, or is past its expiry (beyond the allowed clock skew); it was not run.',
  },
  FIELD_COMMAND_FUTURE: {
    http: 401,
    transient: false,
    description: "The command is dated later than the device's clock plus FIELD_COMMAND_CLOCK_SKEW_S: a forgery, or a wrong clock; it was not run.",
  },
  FIELD_RECEIPTS_SILENT: {
    http: 504,
    transient: true,
    description:
      'The gateway took messages, and LIMITS.receiptsSilentMoveResends resends for want of their commit receipts (twice as many with one GATEWAY_URL) brought no receipt on that connection: the field client closes it and connects again, to the next URL when there are several.',
  },
  FIELD_GATEWAY_BROKER_DOWN: {
    http: 503,
    transient: true,
    description: 'The gateway answered GATEWAY_BROKER_UNAVAILABLE for TIMINGS.fieldBrokerUnavailableMoveMs without taking anything (four times as long with one GATEWAY_URL): the field client closes the connection and connects again, to the next URL when there are several.',
  },
  FIELD_GATEWAY_SILENT: {
    http: 504,
    transient: true,
    description: 'The gateway showed no sign of life (no frame, no ping) for TIMINGS.idleTimeoutMs, or for TIMINGS.answerTimeoutMs after the field client sent it a frame: the connection is presumed dead, dropped, and the next gateway URL tried.',
  },
  FIELD_GATEWAY_FRAME_TOO_LARGE: {
    http: 413,
    transient: true,
    description: 'The gateway sent a frame larger than LIMITS.downlinkFrameMaxBytes (no legitimate frame is): the field client closed the connection (1009) and reconnects.',
  },
  FIELD_GATEWAY_FRAME_INVALID: {
    http: 400,
    transient: false,
    description: 'The gateway sent a frame that does not match the downlink contract (a welcome announcing limits below the least a gateway may have among them); it was ignored.',
  },
  FIELD_GATEWAY_WELCOME_REPEATED: {
    http: 409,
    transient: false,
    description: 'The gateway sent a second welcome on one connection (a welcome is the first frame of a connection, and only that one counts); it was ignored.',
  },
  FIELD_GATEWAY_CERT_REVOKED: {
    http: 502,
    transient: true,
    description:
      "The server's TLS certificate is listed in the field client's CRL (FIELD_CRL_FILE): the key of a revoked certificate (the old edge certificate after a --renew-dmz) is in someone else's hands. Not connected, nothing sent; the next gateway URL is tried.",
  },
  FIELD_CRL_NOT_CURRENT: {
    http: 200,
    transient: false,
    description:
      "The field client's CRL (FIELD_CRL_FILE) is not current by the device's clock: past its nextUpdate, or dated after the clock (a clock behind). Its list is used all the same: the servers it revokes are refused, the others taken. Set the device clock right (NTP), or copy the CA's current certs/ca.crl there (read again when it changes, no restart).",
  },
  FIELD_CRL_RELOAD_REFUSED: {
    http: 200,
    transient: false,
    description:
      "The field client's CRL file (FIELD_CRL_FILE) changed while it ran and the new one was not taken: it cannot be read, is no CRL or no CRL of the CA in FIELD_CA_FILE, is older than the one held (a stale copy would take revocations back), or is gone. The list read before stays in use; copy the CA's current certs/ca.crl there.",
  },
  FIELD_CREDENTIALS_RELOAD_REFUSED: {
    http: 200,
    transient: false,
    description:
      "The field client's certificate and key (FIELD_CERT_FILE, FIELD_KEY_FILE) or token (FIELD_TOKEN_FILE) changed while it ran and the new ones were not taken: a file cannot be read, is no certificate or key, the key is not the certificate's (one of the two copied, the other not yet), or the certificate or token is another device's. The ones read before are still presented; copy both files of the device's new bundle.",
  },
  FIELD_GATEWAY_CRL_REFUSED: {
    http: 502,
    transient: false,
    description:
      "The gateway handed over a CRL (a `crl` frame) that is not the CA's: not a CRL, not signed by the CA in FIELD_CA_FILE, or signed by another CA of FIELD_CA_FILE (a public root beside ours) than the CRL in use. A DMZ passes the CA's CRL on and cannot forge one: this one was ignored, and the CRL in use stays.",
  },
  FIELD_GATEWAY_CRL_REPEATED: {
    http: 409,
    transient: false,
    description: 'The gateway sent a second CRL (a `crl` frame) on one connection; it was ignored, unread (a gateway hands over one at most, after the welcome).',
  },
  FIELD_CRL_STORE_FAILED: {
    http: 507,
    transient: true,
    description:
      'The field client could not keep the CRL a gateway handed over on disk (FIELD_DATA_DIR/ca.crl: a full, read-only or failing disk). It is used all the same, and written again at each connection attempt (and every 10 s while connected) until the disk takes it.',
  },
  FIELD_COMMAND_REPLAYED: { http: 409, transient: false, description: 'This command id was seen before (or is older than the ids the device still remembers); it was not run again.' },
  FIELD_COMMAND_JOURNAL_FAILED: {
    http: 507,
    transient: true,
    description:
      'The field client could not write its command journal (FIELD_DATA_DIR/commands.journal: a full, read-only or failing disk, a file size limit). A command it could not record as started was not run; one that ran keeps its answer in memory; either is answered when the command is delivered again and the journal takes the write.',
  },
  FIELD_COMMANDS_WAITING_FULL: {
    http: 503,
    transient: true,
    description:
      'As many commands as the field client keeps waiting (LIMITS.fieldCommandsWaitingMax, 100) wait already for one of the FIELD_COMMANDS_CONCURRENCY that run at once to end: this one was not run, nor journaled, nor answered; its next delivery (the device\'s next connection, or the gateway\'s next presence for it) runs it.',
  },
  FIELD_COMMAND_JOURNAL_DAMAGED: {
    http: 500,
    transient: false,
    description:
      'At its start the field client found lines of its command journal (FIELD_DATA_DIR/commands.journal) it cannot read: torn by a power cut, or damaged on the disk; a kept answer that fails its schema is read as a command that started (answered failed, FIELD_COMMAND_OUTCOME_UNKNOWN, if delivered again). The other lines are read; an id named only by the lines skipped is not recognised as seen, unless it was issued at or before the journal\'s floor. The next rewrite of the journal leaves them out. A floor or issuedAt further than a day past the device\'s clock at the start (futureValues) is damage too: a floor so read is not believed, an issuedAt is taken as the start\'s time (its id still known); not judged while the clock reads before 2026.',
  },

  FIELD_COMMAND_PROGRAM_RECORD_DAMAGED: {
    http: 500,
    transient: false,
    description:
      'At its start the field client found records of exec programs in its command journal (FIELD_DATA_DIR/commands.journal: the process group and identity of a program, kept while it runs) that fail their schema: torn by a power cut, or damaged on the disk. Their commands (commandIds) are still known as started, and answered failed, FIELD_COMMAND_OUTCOME_UNKNOWN, at their next delivery; but a program of theirs left running by a client killed (SIGKILL) is not ended: the client cannot tell which process it is. Look on the device for the program of those commands.',
  },

  // -- Command API ----------------------------------------------------------------------------------
  API_UNAUTHORIZED: { http: 401, transient: false, description: 'A valid bearer token is required.' },
  API_FORBIDDEN: { http: 403, transient: false, description: 'The credential does not allow this (sending a command needs operator; the test event fieldstream.test needs admin).' },
  API_NOT_FOUND: { http: 404, transient: false, description: 'No such resource.' },
  API_METHOD_NOT_ALLOWED: { http: 405, transient: false, description: 'This method is not allowed here.' },
  API_INVALID_BODY: { http: 400, transient: false, description: 'The request body, or a query parameter of GET /v1/commands, is not valid.' },
  API_INVALID_REQUEST: { http: 400, transient: false, description: 'The request target (its path and query) is not a valid URL.' },
  API_BODY_TOO_LARGE: { http: 413, transient: false, description: 'The request body is larger than accepted.' },
  API_INTERNAL: {
    http: 500,
    transient: false,
    description: 'The command API failed in a way it does not expect (a bug, or a fault such as a full disk); the cause is in its log. Check with GET /v1/commands whether the command was recorded before sending it again.',
  },
  API_BUSY: { http: 503, transient: true, description: 'Listings of commands being written to their callers hold LIMITS.commandApiListingsHeldMaxBytes already (callers reading them slowly, or not at all): this one was not made. Try again after Retry-After.' },
  API_COMMANDS_FULL: { http: 503, transient: true, description: 'As many commands as LIMITS.commandMaxLive, or as many bytes of them as LIMITS.commandMaxLiveBytes, wait for their devices\' answers: none more is taken until some finish or expire (Retry-After).' },
  API_STATE_LINE_SKIPPED: { http: 500, transient: false, description: 'Lines of the command journal (COMMAND_STATE_PATH) were skipped at the start: a last line torn by a crash (a change never acknowledged), a damaged line, a change of a command whose whole line is not there, or commands of a request a crash cut off before all were written (none of them is kept). The commands it holds whole are kept.' },
  API_STATE_IN_USE: {
    http: 409,
    transient: false,
    description:
      'Another command API holds COMMAND_STATE_PATH (its lock, the file beside it named .lock, names it, renewed every 2 s): two on one journal would each rewrite it without the commands the other accepted. Stop the other, or give each its own COMMAND_STATE_PATH. A lock whose holder is gone (killed, the machine restarted) is taken over at once on the same machine, after 15 s from another.',
  },
  API_STATE_WRITE_FAILED: { http: 500, transient: true, description: 'The command API could not write a command\'s state to its journal (COMMAND_STATE_PATH); the write is retried at the next change.' },
  API_STATE_UNCERTAIN: {
    http: 500,
    transient: false,
    description:
      "New commands' journal append failed and cutting its lines back off failed too: they may be in the journal (COMMAND_STATE_PATH), and a restart would send them, or may not. They are kept and sent (details.commandIds), not refused, and the journal is rewritten from memory once the disk takes a write again. Do not send them again: follow them by their ids.",
  },
  API_STATE_CLOSE_FAILED: { http: 500, transient: false, description: 'The command journal (COMMAND_STATE_PATH) was written and synced, then closing it failed (NFS reports write-back errors at close): what was written counts as written (a new command is answered 202 and sent). Check the volume.' },
  API_RESPONSES_UNREADABLE: {
    http: 503,
    transient: true,
    description:
      'The command API could not read the responses the distributor stored in PostgreSQL (POSTGRES_URL or PGHOST set for it) or, without PostgreSQL, in InfluxDB (INFLUXDB_URL set for it); the commands due to expire wait for it, up to TIMINGS.commandReconcileGraceMs past their expiry.',
  },
  API_UNKNOWN_GROUP: { http: 400, transient: false, description: 'No device group of that name is configured.' },
  API_THROTTLED: { http: 429, transient: true, description: 'Too many wrong bearer tokens from this address (LIMITS.apiAuthMaxFailures within TIMINGS.apiAuthFailureWindowMs): its requests are refused unchecked until Retry-After.' },
  API_DEVICE_KEY_MISSING: {
    http: 409,
    transient: false,
    description: 'No signing key is registered for a target device, so its command cannot be authenticated; nothing was sent (COMMAND_ALLOW_UNSIGNED=true allows unsigned commands).',
  },
  API_IDEMPOTENCY_KEY_INVALID: { http: 400, transient: false, description: 'The Idempotency-Key header is not 1–255 printable ASCII characters (a quoted string, or a bare token).' },
  API_IDEMPOTENCY_KEY_REUSED: {
    http: 422,
    transient: false,
    description: 'This caller sent another request with the same Idempotency-Key before: a key names one request; nothing was sent.',
  },
  API_DEVICE_REVOKED: {
    http: 409,
    transient: false,
    description: 'A target device is revoked (COMMAND_REVOKED_DEVICES_FILE): it gets no command, whatever key files are around; nothing was sent.',
  },

  // -- Operator console ------------------------------------------------------------------------------
  CONSOLE_UNAUTHORIZED: { http: 401, transient: false, description: 'Not logged in, or the session expired (or its token was taken out of COMMAND_API_TOKENS_FILE, or refused by the command API, since the login): log in again.' },
  CONSOLE_LOGIN_FAILED: { http: 401, transient: false, description: 'The token is not a known credential (COMMAND_API_TOKEN or COMMAND_API_TOKENS_FILE).' },
  CONSOLE_LOGIN_RATE_LIMITED: { http: 429, transient: true, description: 'Too many login attempts from this address, or through this connection address (a trusted proxy, every client of it together); wait a minute.' },
  CONSOLE_FORBIDDEN: { http: 403, transient: false, description: "The logged-in user's role does not allow this (sending a command needs operator or admin; the test event fieldstream.test needs admin)." },
  CONSOLE_CSRF_INVALID: { http: 403, transient: false, description: 'The request carries no valid CSRF token (x-csrf-token) for this session: reload the page.' },
  CONSOLE_INVALID_REQUEST: { http: 400, transient: false, description: 'The request (body, query or path) is not valid.' },
  CONSOLE_INVALID_CURSOR: { http: 400, transient: false, description: "The `after` cursor of a list read a page at a time is not one the console hands out (`COUNT:DEVICE`, an answer's `next`)." },
  CONSOLE_NOT_FOUND: { http: 404, transient: false, description: 'No such page or resource.' },
  CONSOLE_PRECONDITION_FAILED: { http: 412, transient: false, description: "A conditional request (If-Match, If-Unmodified-Since) whose condition the file does not meet." },
  CONSOLE_RANGE_NOT_SATISFIABLE: { http: 416, transient: false, description: 'A Range request for bytes the file does not have.' },
  CONSOLE_UNKNOWN_DEVICE: { http: 404, transient: false, description: 'The console knows no device of that id.' },
  CONSOLE_COMMAND_API_FAILED: { http: 502, transient: true, description: 'The command API did not answer in time, answered with a server error (5xx) or with something the console does not understand; its own code, when it gave one, is in the details.' },
  CONSOLE_HISTORY_FAILED: { http: 502, transient: true, description: 'The time-series store could not be read for the history asked for.' },
  CONSOLE_TOO_MANY_STREAMS: { http: 503, transient: true, description: 'The console has as many live streams open as it serves (CONSOLE.maxLiveStreams); close a tab or try later.' },
  CONSOLE_TOO_MANY_USER_STREAMS: { http: 429, transient: true, description: 'This user (one credential, all its logins together) has as many live streams open as one user may (CONSOLE.maxLiveStreamsPerUser); close a tab.' },
  CONSOLE_PRESENCES_NOT_LOADED: { http: 503, transient: true, description: "At its start the console could not read the devices' and gateways' last presences from the time-series store (its history's): it started all the same, and each device's state and gateway come from the feed, from its next presence, health or data, as without the read." },
  CONSOLE_HISTORY_BUSY: { http: 503, transient: true, description: 'The console is reading as much history as it reads at once (CONSOLE.historyMaxConcurrent, historyMaxQueued); try again in a moment.' },
  CONSOLE_HTTPS_REQUIRED: { http: 403, transient: false, description: 'The session cookie is Secure (CONSOLE_COOKIE_SECURE=true) but the request came over plain HTTP, or through a proxy not in CONSOLE_TRUSTED_PROXY.' },
  CONSOLE_INTERNAL: { http: 500, transient: false, description: 'The console failed in a way it does not expect; the cause is in its log.' },
  CONSOLE_STATE_INVALID: { http: 500, transient: false, description: "The anomaly detectors' saved state (CONSOLE_STATE_DIR/anomaly-state.jsonl) is damaged, in whole or in some devices' lines: the devices it does not hold whole start afresh (their forests speak again after two days of readings), the rest are restored. The next save replaces the file. No device data is lost: it is in the database." },
  CONSOLE_STATE_WRITE_FAILED: { http: 507, transient: true, description: "The anomaly detectors' state could not be saved into CONSOLE_STATE_DIR (a full, read-only or failing disk): the state saved before stays, and the save is tried again at the next interval; a restart meanwhile restores the older state." },
  MANAGE_UNAUTHORIZED: { http: 401, transient: false, description: 'The management API needs a valid bearer token (Authorization: Bearer ...); a console session cookie is not one.' },
  MANAGE_THROTTLED: { http: 429, transient: true, description: 'Too many wrong bearer tokens from this address (MANAGE.authMaxFailures within MANAGE.authFailureWindowMs): its requests are refused unchecked until Retry-After.' },
  MANAGE_FORBIDDEN: { http: 403, transient: false, description: "The bearer token's role does not allow this (sending a test event needs admin)." },
  MANAGE_INVALID_REQUEST: { http: 400, transient: false, description: 'The request (body, query or path) of the management API is not valid.' },
  MANAGE_NOT_FOUND: { http: 404, transient: false, description: 'The management API has no such endpoint.' },
  MANAGE_UNKNOWN_DEVICE: { http: 404, transient: false, description: 'The console knows no device of that id (not registered, never heard of).' },
  MANAGE_DEVICE_REVOKED: { http: 409, transient: false, description: 'The device is revoked: no test event is sent to it.' },
  MANAGE_COMMAND_API_FAILED: { http: 502, transient: true, description: 'The command API did not answer in time, answered with a server error (5xx) or with something the console does not understand; its own code, when it gave one, is in the details.' },
  MANAGE_INTERNAL: { http: 500, transient: false, description: 'The management API failed in a way it does not expect; the cause is in the console log.' },

  // -- Security (recorded as security events, never written as data) -----------------------------
  SECURITY_UNSIGNED: { http: 401, transient: false, description: 'The message carries no device signature, and signatures are required.' },
  SECURITY_REVOKED: { http: 403, transient: false, description: 'The device was revoked (scripts/revoke-device.sh); its messages are refused.' },
  SECURITY_UNKNOWN_DEVICE: { http: 401, transient: false, description: 'No signing key is registered on the internal network for this device (unknown or revoked).' },
  SECURITY_UNKNOWN_GATEWAY: { http: 403, transient: false, description: 'The gateway id is not admitted (DISTRIBUTOR_GATEWAYS, or past DISTRIBUTOR_MAX_GATEWAYS ids heard from in the last 7 days): a presence naming it is not stored.' },
  SECURITY_BAD_SIGNATURE: { http: 401, transient: false, description: "The message's signature does not match its content and the device's key: forged or tampered with." },
  SECURITY_STALE: { http: 401, transient: false, description: 'The message was signed too long before (or after) the gateway received it: a replay, or a wrong device clock.' },
  SECURITY_REPLAY: { http: 409, transient: false, description: 'The message reuses a sequence number older than the replay window of its device and epoch.' },
  SECURITY_DUPLICATE: { http: 409, transient: false, description: 'This sequence number of the device was accepted already; the copy is not written again.' },

  // -- Embedded broker (npm start) ------------------------------------------------------------------
  BROKER_NOT_AUTHORIZED: {
    http: 403,
    transient: false,
    description: 'The embedded broker refused an MQTT client without a service certificate, or a publish or subscription outside its role (shared/acl.ts); check the client\'s certificate and the topic.',
  },

  // -- Stored feed (internal broker: what the distributor wrote, for the operator console) ------------
  STORED_FEED_INVALID: {
    http: 400,
    transient: false,
    description: 'An authenticated stored-feed message is not JSON, or not a stored-feed message (source, run, sequence, time, points, dropped); it was ignored.',
  },
  STORED_FEED_TOO_LARGE: { http: 413, transient: false, description: 'A message on the stored feed topic is larger than a stored-feed message can be; it was ignored unread.' },
  STORED_FEED_UNAUTHENTICATED: {
    http: 401,
    transient: false,
    description: 'A message on the stored feed topic carries no MAC that verifies under the stored-feed key (none, malformed, or not matching its body): not published by a distributor holding the key; it was ignored unread.',
  },
  STORED_FEED_STALE: {
    http: 401,
    transient: false,
    description: "An authentic stored-feed message was sent longer ago (or further ahead) than the console's clock allows: a replay, or clocks of distributor and console apart; it was ignored.",
  },
  STORED_FEED_REPLAYED: { http: 409, transient: false, description: 'An authentic stored-feed message was taken already, or is older than the replay window of its distributor run; it was ignored.' },

  // -- Configuration, certificates, start-up ------------------------------------------------------
  CONFIG_INVALID: { http: 500, transient: false, description: 'A setting is missing or wrong.' },
  CONFIG_FILE_UNREADABLE: { http: 500, transient: false, description: 'A file named by a setting cannot be read.' },
  FILE_CLOSE_FAILED: {
    http: 500,
    transient: false,
    description: 'A file was appended to and synced, then closing it failed (NFS reports write-back errors at close): the lines are written and count as written. Check the volume.',
  },
  FILE_APPEND_UNCERTAIN: {
    http: 500,
    transient: false,
    description: 'An append to a file of lines failed (its write or its fsync), and cutting what it wrote back off failed too: some or all of its lines may be in the file, and read back at the next start. Check the volume.',
  },
  FILE_NOT_REGULAR: {
    http: 500,
    transient: false,
    description:
      'A file FieldStream keeps and reads back (a file of lines: a command journal, the file transfers finished, the watched files kept, the anomaly state, a local store day file; or a state file read whole: the queue\'s ack.json and meta.json, link-rate.json, a transfer\'s progress, the CRL a gateway handed over, the replay windows\' files, consumer-sessions.json, the file storage\'s transfer markers and chunks, the admitted gateway ids and event tag values; a device\'s signing key, the revoked devices\' list; a process lock) has something other than a regular file in its place: a folder, a FIFO, a device or a link to one. It is not read (a FIFO held the read for ever, a device was read without end); what the reader does then is what it does with a file it cannot read, under that reader\'s code. Move it away.',
  },
  ROLE_TOKENS_INVALID: {
    http: 500,
    transient: false,
    description: 'COMMAND_API_TOKENS_FILE changed while the console or the command API ran, to a file that cannot be read (removed?) or is not a valid tokens file; the last valid set of role tokens stays in force.',
  },
  PKI_CA_MISSING: { http: 404, transient: false, description: 'No CA was found; run scripts/generate-certificates.sh first.' },
  PKI_INVALID_NAME: { http: 400, transient: false, description: 'The name is not valid for a certificate.' },
  PKI_CERT_EXISTS: { http: 409, transient: false, description: 'A certificate with this name already exists, or the device has the other credential (a certificate or a token, not both).' },
  PKI_NAMES_MISSING: { http: 409, transient: false, description: 'The existing service certificates do not name the domain or hosts asked for; nothing was changed.' },
  PKI_BUSY: { http: 503, transient: true, description: 'Another fieldstream-admin command is changing the device tokens file or the revocations; try again.' },
  PKI_RESTORE_RUNNING: {
    http: 503,
    transient: true,
    description: 'A restore (fieldstream-admin restore) is writing the certificates folder, or was killed while it did; nothing was changed: run the command again once the restore is done (a killed one: run that restore again, which finishes it).',
  },
  RESTORE_INCOMPLETE: {
    http: 503,
    transient: false,
    description:
      "A service found the mark `.restore-running` of a restore (fieldstream-admin restore) in a folder it reads (its state folder, the command journal's folder, the device keys' folder): a restore is writing it, or was killed while it did, and what it holds may be part the backup's and part not (replay windows partly restored, device keys of two times). The service does not start on it, and fieldstream-admin backup writes no archive of it (it would hold that mix as if it were whole). Run the restore again to its end (fieldstream-admin restore ARCHIVE, with --force if the first run needed it), which removes the marks; then start the service, or back up.",
  },
  PKI_DMZ_ANCHOR_MISSING: {
    http: 409,
    transient: false,
    description:
      "The DMZ broker's certificate (certs/dmz/mosquitto.crt) or the gateway's (certs/dmz/gateway.crt) is neither of the CA nor of an anchor of its own, or is of the CA after DMZ certificates of it were revoked, so the trust anchor its verifiers are given cannot be written; issue the DMZ's certificates again with --renew-dmz.",
  },
  PKI_CA_EXPIRED: {
    http: 409,
    transient: false,
    description: "The CA has expired: nothing it signs is accepted, so no certificate was issued; make a new CA (--new-ca) and issue the devices' certificates again under it.",
  },
  PKI_CA_KEY_MISSING: {
    http: 409,
    transient: false,
    description:
      "The certificates folder holds a deployment's certificates (certs/ca.crt, fieldstream-pki.json) but not its CA (certs/ca/): a server's copy. Nothing was changed: run the set-up on the machine that keeps the CA, or with --new-ca to make a new CA here (every service certificate and device issued again).",
  },
  PKI_NOT_DEVELOPMENT: {
    http: 409,
    transient: false,
    description:
      "npm start or npm run stack was given a deployment's certificates folder (of a domain, or a server's copy without the CA): it issues development devices and service certificates, which would be credentials the deployment accepts, or a new CA over the deployment's. Nothing was changed: give it a folder of its own (CERTS_DIR=./certs-dev).",
  },
  PKI_DEVICE_REVOKED: { http: 409, transient: false, description: 'The device was revoked; it cannot be issued a certificate again under that id.' },
  PKI_NO_NEWER_CERTIFICATE: {
    http: 409,
    transient: false,
    description: "The device has no certificate newer than the one it has: the CA's log holds one certificate of it (or none), so none is superseded; nothing was revoked.",
  },
  PKI_CERT_NOT_NEWEST: {
    http: 409,
    transient: false,
    description: "The device's certificate in place is not the newest the CA's log holds for it (a renewal that stopped midway); revoking the others would revoke the one its bundle carries, so nothing was revoked.",
  },
  GATEWAY_CERTIFICATE_REVOKED: { http: 403, transient: false, description: 'The client certificate was revoked.' },
  GATEWAY_CERTIFICATE_EXPIRED: { http: 401, transient: false, description: 'The client certificate expired while the device was connected; the connection was closed, and a new one is refused at the TLS handshake.' },
  GATEWAY_TOKEN_AUTH_DISABLED: { http: 403, transient: false, description: 'This gateway takes no device tokens (GATEWAY_TOKEN_AUTH is off).' },
  GATEWAY_TOKEN_MISSING: { http: 401, transient: false, description: 'The token route needs an "Authorization: Bearer <device token>" header with a well-formed device token.' },
  GATEWAY_TOKEN_UNKNOWN_DEVICE: { http: 401, transient: false, description: 'No device token was issued to the device the token names.' },
  GATEWAY_TOKEN_INVALID: { http: 401, transient: false, description: 'The device token is wrong (not the current token of its device).' },
  GATEWAY_TOKEN_REVOKED: { http: 403, transient: false, description: "The device's token was revoked." },
  GATEWAY_TOKEN_EXPIRED: { http: 401, transient: false, description: "The device's token is past its expiry date (expiresAt in the tokens file)." },
  GATEWAY_TOKEN_THROTTLED: {
    http: 429,
    transient: true,
    description: 'Too many failed device tokens from this address lately; try again later.',
  },
  TOKENS_FILE_INVALID: { http: 500, transient: false, description: 'The device tokens file is not valid (damaged, or not written by fieldstream-admin).' },
  CERT_EXPIRING_SOON: {
    http: 200,
    transient: false,
    description: 'A warning, nothing is refused: a certificate (a service\'s own, named by its setting, or a connecting device\'s) expires within 30 days. Renew it (scripts/generate-client-cert.sh DEVICE --renew for a device, scripts/generate-certificates.sh DOMAIN --renew for services).',
  },
  CERT_EXPIRED: {
    http: 500,
    transient: false,
    description: "A service's own certificate (named by the logged setting), or in fieldstream doctor the device's, has expired; its peers will refuse the TLS handshake. Issue a new one (scripts/generate-certificates.sh DOMAIN --renew, scripts/generate-client-cert.sh DEVICE --renew) and restart what reads it.",
  },
  SERVICE_STOP_FORCED: {
    http: 500,
    transient: false,
    description: 'A second SIGINT or SIGTERM came while the service was stopping: it exited at once (status 130 or 143) without waiting for its stop to finish.',
  },
  SERVICE_START_FAILED: {
    http: 500,
    transient: false,
    description: 'The service could not start: the system refused an operation on a file or folder its settings name (a read-only or full disk, its owner or permissions, an immutable flag). The message names the operation, the path (where the system gives one) and the system\'s code (EROFS, ENOSPC, EACCES, EPERM ...). npm run stack: a program it runs (caddy, mosquitto) cannot be run (ENOENT: not installed or not on the PATH).',
  },
  LISTEN_FAILED: { http: 500, transient: false, description: 'A server could not listen on its address (port in use?).' },
  STACK_DIR_IN_USE: {
    http: 409,
    transient: false,
    description: 'Another npm run stack runs on STACK_DIR (its stack.lock names it): two on one folder write one broker persistence file and take the distributor state folder from each other. Stop the other, or give each its own STACK_DIR. A lock whose process is gone is taken over.',
  },
  HTTP_MALFORMED: { http: 400, transient: false, description: 'The request is not valid HTTP/1.1 (its request line or a header could not be parsed); the connection is closed.' },
  HTTP_HEADERS_TOO_LARGE: { http: 431, transient: false, description: 'The request\'s headers are larger than the server reads (16 KiB, Node\'s limit); the connection is closed.' },
  HTTP_REQUEST_TIMEOUT: { http: 408, transient: true, description: 'The request was not in within the server\'s time for it; the connection is closed.' },
  HTTP_CLIENT_NOT_READING: { http: 408, transient: true, description: "The client stopped reading the server's answers (they stayed unsent for the server's stall time); its connection was closed." },
  // 421 Misdirected Request, not 403: the request names a host (its Host, the target URI's
  // authority) this server does not produce answers for (RFC 9110 §15.5.20, §7.4), which is what a
  // page whose name was rebound to our address sends. No credential would change the answer, so it
  // is no refusal of who asks (403, §15.5.4); the same request sent to the name the server answers
  // to is taken.
  HTTP_HOST_NOT_SERVED: {
    http: 421,
    transient: false,
    description: 'The request names a host (its Host header) this server does not answer to: a page whose name was rebound to our address (DNS rebinding). Use localhost, an IP address, or a name the server\'s settings list.',
  },
  // RFC 9110 §8.4.1: a content coding the server does not decode is answered 415. Read as if plain,
  // a gzip body was refused as "not JSON" (the client sent after its JSON), and a plain one so
  // labelled taken.
  HTTP_CONTENT_ENCODING_UNSUPPORTED: {
    http: 415,
    transient: false,
    description: 'The request body is sent with a Content-Encoding (gzip, br, deflate, ...) the server does not decode: nothing was read or done. Send the body as it is, with no Content-Encoding (or identity).',
  },
  HTTP_REQUEST_ABORTED: { http: 400, transient: true, description: 'The client closed the connection before its request body was in; nothing was done and no answer was sent.' },
  MQTT_PACKET_TOO_LARGE: {
    http: 500,
    transient: true,
    description: 'A broker began an MQTT packet larger than the service reads from it (LIMITS.brokerExporterMaxPacketBytes for the broker exporter, LIMITS.sparkplugMaxPacketBytes for the field client\'s Sparkplug input on a plant\'s broker, where a PUBLISH at QoS 0 or 1 that large is skipped unread instead and refused alone as SPARKPLUG_PAYLOAD_INVALID): the connection was closed as soon as the packet\'s length was read, before its bytes were buffered, and is made again. Our brokers send nothing that large; a DMZ broker that does is not one of ours, and on a plant\'s broker someone published a message that large under spBv1.0/. The embedded broker of npm start likewise closes the connection of a client that begins a packet larger than LIMITS.brokerPacketMaxBytes (Mosquitto\'s max_packet_size).',
  },
  MQTT_PROTOCOL_VIOLATION: {
    http: 500,
    transient: true,
    description: 'A broker sent the service a message at a higher QoS than it subscribed at (the broker exporter subscribes at QoS 0, the field client\'s Sparkplug input at 1 at most; MQTT 3.1.1 §3.8.4): not taken, and the connection was closed and is made again. Our brokers send nothing so; a DMZ broker that does is not one of ours, nor a plant broker that does a broker\'s job.',
  },
  MQTT_PUBLISH_REFUSED: {
    http: 500,
    transient: false,
    description: 'The broker refused a publish (an MQTT 5 PUBACK reason code of 0x80 or more: its ACL, a quota): what it carried was not taken; fix the access policy. A command stays queued and is sent again at the next connection to the broker or when its device comes online.',
  },
  MQTT_SUBSCRIBE_REFUSED: {
    http: 500,
    transient: false,
    description: 'The broker refused a subscription (its ACL or a bad filter): nothing arrives on it; fix the access policy or the filter.',
  },

  // -- The operator's admin command (scripts/admin: devices, backup and restore) -------------------
  ADMIN_USAGE: { http: 400, transient: false, description: 'The admin command was called with missing, unknown or malformed arguments; its usage was printed.' },
  ADMIN_UNKNOWN_DEVICE: { http: 404, transient: false, description: 'No certificate, signing key or revocation is known for this device id.' },
  DEAD_LETTERS_NOT_FOUND: { http: 404, transient: false, description: 'There is no dead-letter folder at the path given (DEAD_LETTER_PATH, or --dead-letters).' },
  DEAD_LETTERS_UNREADABLE: { http: 500, transient: false, description: 'A file of the dead-letter folder cannot be read (a folder, a FIFO or a symbolic link in the place of a letter file or of replayed.jsonl, an I/O error); list and replay stop, naming it.' },
  DEAD_LETTER_UNREADABLE: { http: 400, transient: false, description: 'A line of a dead-letter file is not a dead letter (a torn last line after a crash, or a damaged file); it was skipped.' },
  DEAD_LETTER_NOT_REPLAYABLE: {
    http: 422,
    transient: false,
    description: 'A dead letter holds nothing a replay can write: an excerpt or an invalid payload, a file, a message of no data, or no message authentic under its device key as registered now.',
  },
  DEAD_LETTER_PARTLY_REPLAYED: {
    http: 422,
    transient: true,
    description: 'Some messages of a dead letter were written on replay and some left out (not authentic under the device key as registered now, unsigned where signatures are required, an arrival time at odds with the signing, a repeated copy); the letter is not recorded as replayed.',
  },
  DEAD_LETTERS_NO_KEYS: { http: 404, transient: false, description: 'There is no folder of device signing keys where the replay looks (DISTRIBUTOR_DEVICE_KEYS_DIR, or internal/device-keys of the certificates folder).' },
  DEAD_LETTERS_NO_STATE: { http: 404, transient: false, description: "There is no distributor state folder where the replay looks (DISTRIBUTOR_STATE_DIR, --state-dir), so the event types and severities the distributor admitted cannot be read." },
  DEAD_LETTERS_REFUSED_AGAIN: { http: 400, transient: false, description: 'The store refused the data of a dead letter again on replay (or the replay did, for a point still dated more than LIMITS.pointMaxAheadMs ahead); the points of it the store takes are written, and it stays to be replayed once the cause is fixed.' },
  DEAD_LETTERS_UNRECORDED: {
    http: 500,
    transient: true,
    description: 'A letter was written into the stores on replay, but its record could not be appended to replayed.jsonl (the dead-letter folder read-only, full or immutable); the replay stops there, saying what it did. Run it again once the folder takes writes: that letter is written again, the same points and rows.',
  },
  BACKUP_EXISTS: { http: 409, transient: false, description: 'The backup archive to write exists already; nothing was written (--force replaces it).' },
  BACKUP_OUTPUT_IN_SOURCE: {
    http: 400,
    transient: false,
    description:
      'The archive would be written inside a folder the backup reads (the certificates folder, the state folder) or over the command journal, or the state folder holds a backup archive already (taken as state, each backup would hold the ones before it); nothing was written: write the archive elsewhere, move an old one out.',
  },
  BACKUP_EMPTY: { http: 404, transient: false, description: 'Nothing to back up was found at the paths given (certificates folder, distributor state, command journal).' },
  BACKUP_NOT_FOUND: { http: 404, transient: false, description: 'The backup archive to restore does not exist.' },
  BACKUP_INVALID: { http: 400, transient: false, description: 'The file is not a FieldStream backup: not a gzip tar archive, no valid manifest, an unsupported version, or an unexpected entry; nothing was restored.' },
  BACKUP_TAMPERED: { http: 400, transient: false, description: "The archive's content differs from its manifest (a file's size or sha256, a file missing or added) or from the sha256 expected; nothing was restored." },
  BACKUP_UNSAFE_PATH: { http: 400, transient: false, description: 'An entry of the archive would be written outside its folder (absolute path, "..", a link); nothing was restored.' },
  BACKUP_STATE_EXISTS: { http: 409, transient: false, description: 'The restore would overwrite existing state that differs from the archive; nothing was restored (--force overwrites it).' },
  BACKUP_STATE_IN_USE: {
    http: 409,
    transient: false,
    description:
      "A distributor holds a slot of the state folder whose replay windows the archive holds (its lease.json renewed within 15 s): restored under it, they would never be read, and its own would be lost. Nothing was restored; stop the distributors, then restore.",
  },
  BACKUP_UNREADABLE: { http: 500, transient: false, description: 'A folder or file to back up, or the archive to restore, could not be read (permissions, an I/O error, a path through a file); the message names it; nothing was written.' },
  BACKUP_TOO_LARGE: { http: 413, transient: false, description: 'The backup would be larger than a restore reads (LIMITS.backupArchiveMaxBytes, its manifest counted, backupMaxBytes, backupMaxFiles, backupManifestMaxBytes), or the archive to restore declares more; nothing was written.' },
  BACKUP_WRITE_FAILED: { http: 500, transient: false, description: 'The archive or a restored file could not be written (disk full, permissions, a path through a file): a backup leaves no archive; a restore puts back every file it had replaced or added.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** Whether sending the same thing again later can succeed (see {@link ErrorSpec.transient}). */
export function isTransient(code: ErrorCode): boolean {
  return ERRORS[code].transient;
}

/** An error with a stable code from {@link ERRORS}; `details` is safe to show to the peer. */
export class FieldStreamError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message ?? ERRORS[code].description, options);
    this.name = 'FieldStreamError';
    this.code = code;
    this.details = details === undefined ? undefined : Object.freeze({ ...details });
  }

  get httpStatus(): number {
    return ERRORS[this.code].http;
  }
}

export function isFieldStreamError(err: unknown, code?: ErrorCode): err is FieldStreamError {
  return err instanceof FieldStreamError && (code === undefined || err.code === code);
}
