//! Reading JSON documents in assertions: `doc.str_at("message.reply_to.author_uid")` walks a
//! dotted path (numeric segments index arrays) and panics with the whole document when the path
//! is missing or of another type, so a failed assertion shows what the server actually sent.

use simd_json::OwnedValue;
use simd_json::prelude::*;

pub type Json = OwnedValue;

/// Parses `bytes` as JSON, panicking with the text when it is not.
pub fn parse(bytes: &[u8]) -> Json {
    let mut copy = bytes.to_vec();
    simd_json::to_owned_value(&mut copy)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

/// Encodes a document for a request body.
pub fn encode(value: &Json) -> String {
    simd_json::to_string(value).expect("JSON encodes")
}

pub trait JsonPath {
    /// The value at `path`, if there is one.
    fn try_at(&self, path: &str) -> Option<&Json>;
    fn at(&self, path: &str) -> &Json;
    fn str_at(&self, path: &str) -> &str;
    fn i64_at(&self, path: &str) -> i64;
    fn bool_at(&self, path: &str) -> bool;
    fn arr_at(&self, path: &str) -> &Vec<Json>;
    fn is_null_at(&self, path: &str) -> bool;
    /// The keys of the object at `path` ("" for the document itself), sorted.
    fn keys_at(&self, path: &str) -> Vec<String>;
}

fn walk<'a>(mut value: &'a Json, path: &str) -> Option<&'a Json> {
    if path.is_empty() {
        return Some(value);
    }
    for segment in path.split('.') {
        value = match segment.parse::<usize>() {
            Ok(index) if value.is_array() => value.as_array()?.get(index)?,
            _ => value.get(segment)?,
        };
    }
    Some(value)
}

impl JsonPath for Json {
    fn try_at(&self, path: &str) -> Option<&Json> {
        walk(self, path)
    }

    fn at(&self, path: &str) -> &Json {
        walk(self, path).unwrap_or_else(|| panic!("no `{path}` in {}", encode(self)))
    }

    fn str_at(&self, path: &str) -> &str {
        self.at(path)
            .as_str()
            .unwrap_or_else(|| panic!("`{path}` is not a string in {}", encode(self)))
    }

    fn i64_at(&self, path: &str) -> i64 {
        self.at(path)
            .as_i64()
            .unwrap_or_else(|| panic!("`{path}` is not an integer in {}", encode(self)))
    }

    fn bool_at(&self, path: &str) -> bool {
        self.at(path)
            .as_bool()
            .unwrap_or_else(|| panic!("`{path}` is not a bool in {}", encode(self)))
    }

    fn arr_at(&self, path: &str) -> &Vec<Json> {
        self.at(path)
            .as_array()
            .unwrap_or_else(|| panic!("`{path}` is not an array in {}", encode(self)))
    }

    fn is_null_at(&self, path: &str) -> bool {
        self.at(path).is_null()
    }

    fn keys_at(&self, path: &str) -> Vec<String> {
        let object = self
            .at(path)
            .as_object()
            .unwrap_or_else(|| panic!("`{path}` is not an object in {}", encode(self)));
        let mut keys: Vec<String> = object.keys().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }
}

/// Sorted owned key names, for comparing with [`JsonPath::keys_at`].
pub fn key_set(keys: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    keys.sort();
    keys
}
