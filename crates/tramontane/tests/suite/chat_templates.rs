//! Chat templates render exactly as transformers' `apply_chat_template(tokenize=False)`.
//! Expectations: `tests/fixtures/templates/cases.json`, made by `scripts/fixtures/make_template_cases.py`
//! with transformers and the clock pinned to `now` (local time).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tramontane::{ChatRequest, ChatTemplate, Error};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/templates")
}

fn load_cases() -> Value {
    let path = fixtures().join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixtures' "now" (a naive local time, `YYYY-MM-DDTHH:MM:SS`) as an instant with offset 0, so that
/// the template's local wall clock reads exactly that.
fn pinned_now(iso: &str) -> web_time::SystemTime {
    let n = |r: std::ops::Range<usize>| iso[r].parse::<i64>().unwrap_or_else(|e| panic!("now {iso:?}: {e}"));
    let (y, m, d, hh, mm, ss) = (n(0..4), n(5..7), n(8..10), n(11..13), n(14..16), n(17..19));
    // days from civil (Howard Hinnant)
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    web_time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// First differing position (in chars) and both sides around it.
fn describe_diff(expected: &str, got: &str) -> String {
    let e: Vec<char> = expected.chars().collect();
    let g: Vec<char> = got.chars().collect();
    let pos = e.iter().zip(&g).position(|(a, b)| a != b).unwrap_or(e.len().min(g.len()));
    let ctx = |v: &[char]| -> String {
        let from = pos.saturating_sub(40);
        let to = (pos + 40).min(v.len());
        v[from..to].iter().collect()
    };
    format!(
        "first difference at char {pos} (expected {} chars, got {}):\n      expected …{:?}…\n      got      …{:?}…",
        e.len(),
        g.len(),
        ctx(&e),
        ctx(&g)
    )
}

#[test]
fn every_case_renders_like_transformers() {
    let doc = load_cases();
    let now = pinned_now(doc["now"].as_str().expect("now"));
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() > 100, "too few cases: {}", cases.len());
    let mut failures = Vec::new();
    let mut per_template: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for case in cases {
        let template = case["template"].as_str().expect("template");
        let name = case["name"].as_str().expect("name");
        let source = std::fs::read_to_string(fixtures().join(template)).expect("template file");
        let tally = per_template.entry(template.to_string()).or_default();
        tally.1 += 1;
        let t = match ChatTemplate::new(&source, case["bos_token"].as_str(), case["eos_token"].as_str()) {
            Ok(t) => t.with_clock(move || (now, 0)),
            Err(e) => {
                failures.push(format!("{template} / {name}: does not compile: {e}"));
                continue;
            }
        };
        let req: ChatRequest = serde_json::from_value(case["request"].clone()).expect("request");
        let got = t.render(&req);
        let ok = match (&case["expected"], &case["error"], &got) {
            (Value::String(expected), _, Ok(text)) if expected == text => true,
            (Value::String(expected), _, Ok(text)) => {
                failures.push(format!("{template} / {name}: {}", describe_diff(expected, text)));
                false
            }
            (Value::String(_), _, Err(e)) => {
                failures.push(format!("{template} / {name}: expected a rendering, got error {e}"));
                false
            }
            (_, Value::Object(err), Err(Error::Template(msg))) => {
                let expected_msg = err["message"].as_str().unwrap_or_default();
                // raise_exception must carry the template's own message; other failures (an undefined
                // value added to a string, ...) only have to fail: engines word them differently.
                if err["raised_by_template"].as_bool() == Some(true) && msg != expected_msg {
                    failures.push(format!("{template} / {name}: raised {msg:?}, expected {expected_msg:?}"));
                    false
                } else {
                    true
                }
            }
            (_, Value::Object(err), other) => {
                failures.push(format!("{template} / {name}: expected error {:?}, got {other:?}", err["message"]));
                false
            }
            _ => panic!("{template} / {name}: case has neither expected nor error"),
        };
        if ok {
            tally.0 += 1;
        }
    }
    let summary: Vec<String> = per_template.iter().map(|(t, (ok, n))| format!("  {ok:>3}/{n:<3} {t}")).collect();
    println!("{}", summary.join("\n"));
    assert!(failures.is_empty(), "{} of {} cases differ from transformers:\n{}\n\nper template:\n{}", failures.len(), cases.len(), failures.join("\n"), summary.join("\n"));
}

#[test]
fn a_template_that_does_not_compile_is_a_template_error() {
    for bad in ["{% if messages %}unclosed", "{{ messages[ }}", "{% for %}{% endfor %}", "{% endif %}"] {
        match ChatTemplate::new(bad, Some("<s>"), Some("</s>")) {
            Err(Error::Template(msg)) => assert!(!msg.is_empty(), "{bad:?}: empty message"),
            Err(e) => panic!("{bad:?}: wrong error kind {e:?}"),
            Ok(_) => panic!("{bad:?}: compiled"),
        }
    }
}

#[test]
fn raise_exception_is_a_template_error_with_the_templates_message_at_render_only() {
    // Compiling never runs raise_exception; rendering a request that reaches it does.
    let t = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'narrator' %}{{ raise_exception('No narrators: ' + m.content) }}{% endif %}{{ m.content }}{% endfor %}",
        None,
        None,
    )
    .expect("compiles");
    let ok = ChatRequest { messages: vec![serde_json::json!({"role": "user", "content": "hi"})], ..Default::default() };
    assert_eq!(t.render(&ok).expect("renders"), "hi");
    let bad = ChatRequest { messages: vec![serde_json::json!({"role": "narrator", "content": "once upon"})], ..Default::default() };
    match t.render(&bad) {
        Err(Error::Template(msg)) => assert_eq!(msg, "No narrators: once upon"),
        other => panic!("expected Error::Template, got {other:?}"),
    }
}

#[test]
fn the_default_clock_gives_todays_date() {
    // Without a pinned clock strftime_now reads the system clock: the year must be the current one (UTC
    // and the local date agree on the year except around New Year's midnight, so compare to both sides).
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", None, None).expect("compiles");
    let year: i64 = t.render(&ChatRequest::default()).expect("renders").parse().expect("a year");
    let secs = web_time::SystemTime::now().duration_since(web_time::UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let approx = 1970 + secs / 31_556_952;
    assert!((approx - 1..=approx + 1).contains(&year), "year {year}, expected about {approx}");
}
