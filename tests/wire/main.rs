//! The wire format: golden fixtures shared with the Go package (`fixtures`), and decoding
//! that matches Go's `encoding/json` (`go_decoding`).

mod fixtures;
mod go_decoding;
