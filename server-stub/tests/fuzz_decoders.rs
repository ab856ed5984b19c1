//! Fuzzing every decoder of frames and notices, seeded: client frames
//! (`ClientMessage`, what the gateway parses from any socket), server frames
//! (`ServerMessage`, what clients parse), the feed change notices and the
//! `job.finish` payloads the hub parses from Redis pub/sub, and the name
//! rules. Inputs are mutations of valid frames (bytes flipped, cut,
//! duplicated, spliced, values swapped for hostile ones) plus random text.
//! Decoding never panics; whatever decodes re-encodes and decodes to the same
//! value; names follow the documented rules. `THOONK_FUZZ_SEED` and
//! `THOONK_FUZZ_CASES` replay or lengthen a run.

use serde_json::{json, Value};
use thoonk_protocol::{ClientMessage, FeedName, FeedPattern, ItemId, ServerMessage};
use thoonk_server::feeds::ChangeNotice;
use thoonk_server::jobs::parse_finish;
use thoonk_testkit::IndexRng;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client_frames() -> Vec<Value> {
    vec![
        json!({"type":"hello","protocol":1,"token":"ann","client_id":"c5f1"}),
        json!({"type":"subscribe","pattern":"team:353:member:*:tasks","known":{"team:353:member:ann:tasks":{"epoch":1764440000123456u64,"rev":41}}}),
        json!({"type":"unsubscribe","pattern":"team:353:member:*:tasks"}),
        json!({"type":"replay","feed":"team:353:member:ann:tasks","from":{"epoch":1764440000123456u64,"rev":41}}),
        json!({"type":"submit","change":{"id":"c5f1:7","op":{"kind":"publish","feed":"t:1","id":"t9","item":{"title":"Buy milk"},"position":{"after":"t8"}},"base":{"t:1":41}}}),
        json!({"type":"submit","change":{"id":"c5f1:8","op":{"kind":"move","feed":"t:1","id":"t9","position":"begin"}}}),
        json!({"type":"submit","change":{"id":"c5f1:9","op":{"kind":"action","name":"delegate_task","payload":{"to":"bob"}}}}),
        json!({"type":"ping"}),
    ]
}

fn server_frames() -> Vec<Value> {
    vec![
        json!({"type":"welcome","protocol":1,"user":"ann"}),
        json!({"type":"subscribed","pattern":"t:*","feeds":["t:1","t:2"]}),
        json!({"type":"snapshot","feed":"t:2","epoch":17,"rev":3,"items":[{"id":"t1","item":{"title":"Call"},"rev":3}]}),
        json!({"type":"changes","feed":"t:1","epoch":17,"events":[{"rev":42,"change":{"op":"edit","id":"t9","item":{"a":1},"prev":{"a":0},"job":"c7:3"}}]}),
        json!({"type":"event","feed":"t:1","epoch":17,"rev":43,"change":{"op":"publish","id":"t10","item":null,"position":"end"}}),
        json!({"type":"ack","id":"c5f1:7"}),
        json!({"type":"outcome","id":"c5f1:7","outcome":{"status":"conflict","feed":"t:1","id":"t1","base":null,"current":{"a":2},"rev":9,"history":[]}}),
        json!({"type":"error","code":"forbidden","message":"no"}),
        json!({"type":"pong"}),
    ]
}

const HOSTILE: [&str; 14] = [
    "null",
    "-1",
    "1e400",
    "18446744073709551616",
    "\"\"",
    "\"a\\u0000b\"",
    "\"*\"",
    "\"a:**\"",
    "[]",
    "{}",
    "true",
    "\"\\ud800\"",
    "0.5",
    "\"x:[a]\"",
];

/// Replaces a random leaf of `v` with a hostile value.
fn mutate_value(v: &mut Value, rng: &mut IndexRng) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = &keys[rng.below(keys.len())];
            if rng.below(4) == 0 {
                map.remove(key);
            } else {
                mutate_value(map.get_mut(key).unwrap(), rng);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.below(items.len());
            mutate_value(&mut items[i], rng);
        }
        _ => *v = serde_json::from_str(HOSTILE[rng.below(HOSTILE.len())]).unwrap_or(Value::Null),
    }
}

fn mutate_text(text: &str, rng: &mut IndexRng) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len());
        match rng.below(5) {
            0 => bytes[at] = (rng.next_u64() & 0x7f) as u8,
            1 => bytes.truncate(at),
            2 => {
                let tail = bytes[at..].to_vec();
                bytes.extend_from_slice(&tail);
            }
            3 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, b"{}[]\",:\\0"[rng.below(9)]),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn inputs(valid: &[Value], rng: &mut IndexRng) -> String {
    let base = &valid[rng.below(valid.len())];
    match rng.below(3) {
        0 => {
            let mut v = base.clone();
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut v, rng);
            }
            v.to_string()
        }
        1 => mutate_text(&base.to_string(), rng),
        _ => (0..rng.below(60))
            .map(|_| char::from_u32(rng.below(0x250) as u32).unwrap_or('?'))
            .collect(),
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && !s.contains('\0') && !s.contains(['*', '?', '[', ']', '\\'])
}

#[test]
fn frame_decoders_never_panic_and_round_trip() {
    let seed = env_u64("THOONK_FUZZ_SEED", 0xf4a3);
    let cases = env_u64("THOONK_FUZZ_CASES", 20_000);
    eprintln!("fuzz_decoders: seed {seed}, {cases} cases (THOONK_FUZZ_SEED={seed})");
    let mut rng = IndexRng::new(seed);
    let (client, server) = (client_frames(), server_frames());
    let mut decoded = [0usize; 2];
    for case in 0..cases {
        let text = inputs(&client, &mut rng);
        if let Ok(m) = serde_json::from_str::<ClientMessage>(&text) {
            decoded[0] += 1;
            let again: ClientMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap())
                .unwrap_or_else(|e| panic!("case {case}: {text} re-decodes: {e}"));
            assert_eq!(again, m, "case {case}: {text}");
        }
        let text = inputs(&server, &mut rng);
        if let Ok(m) = serde_json::from_str::<ServerMessage>(&text) {
            decoded[1] += 1;
            let again: ServerMessage = serde_json::from_str(&serde_json::to_string(&m).unwrap())
                .unwrap_or_else(|e| panic!("case {case}: {text} re-decodes: {e}"));
            assert_eq!(again, m, "case {case}: {text}");
        }
    }
    eprintln!(
        "fuzz_decoders: decoded {} client and {} server frames",
        decoded[0], decoded[1]
    );
    assert!(
        decoded[0] > 0 && decoded[1] > 0,
        "the mutations keep some frames valid"
    );
}

#[test]
fn notice_and_finish_decoders_never_panic() {
    let seed = env_u64("THOONK_FUZZ_SEED", 0xf4a3);
    let cases = env_u64("THOONK_FUZZ_CASES", 20_000);
    let mut rng = IndexRng::new(seed);
    let notices = vec![
        json!({"feed":"team:1:tasks","epoch":1795976301156395u64,"rev":7,
        "change":{"op":"edit","id":"a","item":{"title":"x"},"position":"end","prev":{"title":"w"},"job":"c1:4"}}),
    ];
    for _ in 0..cases {
        let text = inputs(&notices, &mut rng);
        let _ = serde_json::from_slice::<ChangeNotice>(text.as_bytes());
        let outcome = inputs(&server_frames()[6..7], &mut rng);
        let payload = match rng.below(3) {
            0 => format!("c1:{}\0{outcome}", rng.below(100)),
            1 => format!("{}\0{}", mutate_text("c1:7", &mut rng), outcome),
            _ => outcome,
        };
        if let Some((id, _)) = parse_finish(&payload) {
            assert!(payload.starts_with(&format!("{}\0", id.0)), "{payload:?}");
        }
    }
}

#[test]
fn names_follow_the_documented_rules() {
    let seed = env_u64("THOONK_FUZZ_SEED", 0xf4a3);
    let cases = env_u64("THOONK_FUZZ_CASES", 20_000);
    let mut rng = IndexRng::new(seed);
    let alphabet = [
        'a',
        ':',
        '*',
        '?',
        '[',
        ']',
        '\\',
        '\0',
        'é',
        '{',
        '}',
        ' ',
        '\u{1F600}',
    ];
    for _ in 0..cases {
        let len = match rng.below(10) {
            0 => 250 + rng.below(20),
            _ => rng.below(12),
        };
        let s: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        assert_eq!(
            FeedName::new(s.clone()).is_ok(),
            name_ok(&s),
            "feed name {s:?}"
        );
        let id_ok = !s.is_empty() && s.len() <= 256 && !s.contains('\0');
        assert_eq!(ItemId::new(s.clone()).is_ok(), id_ok, "item id {s:?}");
        // A pattern is a name in which whole segments may be `*`.
        let pattern_ok = !s.is_empty()
            && s.len() <= 256
            && !s.contains('\0')
            && s.split(':')
                .all(|seg| seg == "*" || !seg.contains(['*', '?', '[', ']', '\\']));
        let parsed = FeedPattern::new(s.clone());
        assert_eq!(parsed.is_ok(), pattern_ok, "pattern {s:?}");
        if let Ok(p) = parsed {
            if p.is_concrete() {
                assert!(
                    FeedName::new(s.clone()).is_ok(),
                    "concrete pattern {s:?} is a feed name"
                );
            }
        }
    }
}
