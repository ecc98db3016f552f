//! Values as Python shows them: transformers renders templates with jinja2, so printing a value is
//! Python's `str()` (`True`, `None`, `{'a': 1}`), and its `tojson` filter is `json.dumps` (no HTML
//! escaping, keys in the given order, non-ASCII kept, `indent`/`separators`/`sort_keys`/`ensure_ascii`).

use std::fmt::Write;

use minijinja::value::{Kwargs, Rest, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Python's `repr(float)`: shortest round-trip digits, scientific notation below 1e-4 and from 1e16.
pub(crate) fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // `{:e}` gives the shortest digits that round-trip, e.g. "1.2345e3" / "-5e-7".
    let sci = format!("{:e}", f);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if (-4..16).contains(&exp) {
        if exp < 0 {
            out.push_str("0.");
            for _ in 0..(-exp - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    out
}

fn number_text(v: &Value, json: bool) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    match f64::try_from(v.clone()) {
        Ok(f) if json && f.is_nan() => "NaN".into(),
        Ok(f) if json && f.is_infinite() => if f > 0.0 { "Infinity" } else { "-Infinity" }.into(),
        Ok(f) => py_float(f),
        Err(_) => v.to_string(),
    }
}

/// Python's `repr(str)` (quote choice and escapes of `str.__repr__`).
fn py_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_printable(c) => {
                let n = c as u32;
                let _ = if n <= 0xff {
                    write!(out, "\\x{n:02x}")
                } else if n <= 0xffff {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// An approximation of Python's `str.isprintable` (Unicode categories Cc, Cf, Cs, Co, Cn, Zl, Zp and
/// Zs other than the space are not printable): the characters chat text realistically contains.
fn py_printable(c: char) -> bool {
    let n = c as u32;
    !(n < 0x20
        || (0x7f..=0xa0).contains(&n)
        || n == 0xad
        || n == 0x1680
        || (0x2000..=0x200f).contains(&n)
        || (0x2028..=0x202f).contains(&n)
        || (0x205f..=0x206f).contains(&n)
        || n == 0x3000
        || n == 0xfeff
        || (0xe000..=0xf8ff).contains(&n)
        || (0xfff9..=0xfffb).contains(&n))
}

/// Python's `repr()` of a template value.
fn py_repr(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::String => py_str_repr(v.as_str().unwrap_or_default(), out),
        _ => py_str(v, out),
    }
}

/// Python's `str()` of a template value, which is what jinja2 prints.
pub(crate) fn py_str(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => out.push_str(&number_text(v, false)),
        ValueKind::String => out.push_str(v.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(iter) = v.try_iter() {
                for (i, item) in iter.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = v.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&key, out);
                    out.push_str(": ");
                    py_repr(&v.get_item(&key).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{v}");
        }
    }
}

pub(crate) fn py_string(v: &Value) -> String {
    let mut out = String::new();
    py_str(v, &mut out);
    out
}

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn json_str(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn not_serializable(v: &Value) -> Error {
    let name = match v.kind() {
        ValueKind::Undefined => "Undefined".to_string(),
        ValueKind::Bytes => "bytes".to_string(),
        k => k.to_string(),
    };
    Error::new(ErrorKind::InvalidOperation, format!("Object of type {name} is not JSON serializable"))
}

fn json_key(k: &Value) -> Result<String, Error> {
    // json.dumps turns str, int, float, bool and None keys into strings.
    Ok(match k.kind() {
        ValueKind::String => k.as_str().unwrap_or_default().to_string(),
        ValueKind::Number => number_text(k, true),
        ValueKind::Bool => if k.is_true() { "true" } else { "false" }.to_string(),
        ValueKind::None => "null".to_string(),
        _ => return Err(Error::new(ErrorKind::InvalidOperation, format!("keys must be str, int, float, bool or None, not {}", k.kind()))),
    })
}

fn newline(o: &JsonOpts, level: usize, out: &mut String) {
    if let Some(ind) = &o.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn dump(v: &Value, o: &JsonOpts, level: usize, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&number_text(v, true)),
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(o, level + 1, out);
                dump(item, o, level + 1, out)?;
            }
            newline(o, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut pairs = Vec::new();
            for k in v.try_iter()? {
                let val = v.get_item(&k)?;
                pairs.push((json_key(&k)?, val));
            }
            if o.sort_keys {
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if pairs.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, val)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(&o.item_sep);
                }
                newline(o, level + 1, out);
                json_str(k, o.ensure_ascii, out);
                out.push_str(&o.key_sep);
                dump(val, o, level + 1, out)?;
            }
            newline(o, level, out);
            out.push('}');
        }
        _ => return Err(not_serializable(v)),
    }
    Ok(())
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, which is
/// `json.dumps` with those arguments (positional ones in that order, as in its Python signature).
pub(crate) fn tojson(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let mut params: [Option<Value>; 4] = Default::default();
    if args.len() > params.len() {
        return Err(Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 positional arguments"));
    }
    for (slot, a) in params.iter_mut().zip(args.iter()) {
        *slot = Some(a.clone());
    }
    for (i, name) in ["ensure_ascii", "indent", "separators", "sort_keys"].iter().enumerate() {
        if let Some(v) = kwargs.get::<Option<Value>>(name)? {
            if params[i].is_some() {
                return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson got multiple values for argument '{name}'")));
            }
            params[i] = Some(v);
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = params;
    let given = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_none() && !v.is_undefined()).cloned();
    let indent = match given(&indent) {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(n.clamp(0, 1024) as usize)),
            None => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string")),
        },
    };
    let (item_sep, key_sep) = match given(&separators) {
        Some(v) => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match (parts.first().and_then(|p| p.as_str()), parts.get(1).and_then(|p| p.as_str()), parts.len()) {
                (Some(a), Some(b), 2) => (a.to_string(), b.to_string()),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = JsonOpts {
        ensure_ascii: given(&ensure_ascii).map(|v| v.is_true()).unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: given(&sort_keys).map(|v| v.is_true()).unwrap_or(false),
    };
    let mut out = String::new();
    dump(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

/// jinja2's `trim(value, chars=None)`: `str(value).strip(chars)` (so a list trims its Python repr).
pub(crate) fn trim(value: &Value, chars: Option<String>) -> Value {
    let s = py_string(value);
    let out = match chars {
        Some(chars) => {
            let set: Vec<char> = chars.chars().collect();
            s.trim_matches(&set[..]).to_string()
        }
        None => s.trim().to_string(),
    };
    Value::from(out)
}

/// jinja2's `join(value, d='', attribute=None)`: items joined as Python's `str()` shows them.
pub(crate) fn join(value: &Value, args: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    if args.len() > 2 {
        return Err(Error::new(ErrorKind::TooManyArguments, "join takes at most 2 arguments"));
    }
    let joiner = match (args.first().cloned(), kwargs.get::<Option<Value>>("d")?) {
        (Some(j), None) | (None, Some(j)) => py_string(&j),
        (None, None) => String::new(),
        (Some(_), Some(_)) => return Err(Error::new(ErrorKind::InvalidOperation, "join got multiple values for argument 'd'")),
    };
    let attribute = match (args.get(1).cloned(), kwargs.get::<Option<Value>>("attribute")?) {
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(Error::new(ErrorKind::InvalidOperation, "join got multiple values for argument 'attribute'")),
    };
    kwargs.assert_all_used()?;
    if value.is_undefined() {
        return Ok(Value::from(""));
    }
    let mut out = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            out.push_str(&joiner);
        }
        let item = match &attribute {
            Some(attr) => attribute_of(&item, attr)?,
            None => item,
        };
        py_str(&item, &mut out);
    }
    Ok(Value::from(out))
}

/// jinja2's attribute lookup for filters: `"a.b.0"` walks nested items, integer parts index sequences.
fn attribute_of(item: &Value, attr: &Value) -> Result<Value, Error> {
    let Some(path) = attr.as_str() else { return item.get_item(attr) };
    let mut cur = item.clone();
    for part in path.split('.') {
        let key = match part.parse::<i64>() {
            Ok(n) if cur.kind() == ValueKind::Seq => Value::from(n),
            _ => Value::from(part),
        };
        cur = cur.get_item(&key)?;
    }
    Ok(cur)
}

/// jinja2's `length`: `len(value)`, which is 0 for an undefined value (jinja2's default `Undefined`).
pub(crate) fn length(value: &Value) -> Result<Value, Error> {
    if value.is_undefined() {
        return Ok(Value::from(0));
    }
    match value.len() {
        Some(n) => Ok(Value::from(n)),
        None => Err(Error::new(ErrorKind::InvalidOperation, format!("object of type '{}' has no len()", value.kind()))),
    }
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn floats_like_python() {
        for (f, s) in [
            (1.5, "1.5"),
            (2.0, "2.0"),
            (1e-7, "1e-07"),
            (0.0001, "0.0001"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (123456789.125, "123456789.125"),
            (-0.5, "-0.5"),
            (0.1, "0.1"),
            (1.25e-5, "1.25e-05"),
        ] {
            assert_eq!(py_float(f), s, "{f}");
        }
    }
}
