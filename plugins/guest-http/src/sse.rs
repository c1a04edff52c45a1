//! An incremental Server-Sent Events parser: feed it bytes as they arrive,
//! get whole events back.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field; empty when the stream sets none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Parser state: the unfinished line and event.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if let Some(event) = self.line_done(&line) {
                events.push(event);
            }
        }
        events
    }

    /// Ends the stream: an event without its closing blank line still counts.
    pub fn finish(&mut self) -> Option<Event> {
        if !self.line.is_empty() {
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if let Some(event) = self.line_done(&line) {
                return Some(event);
            }
        }
        self.line_done("")
    }

    fn line_done(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_empty() {
                return None;
            }
            return Some(Event {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None; // comment / keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = value.to_string(),
            _ => {} // id, retry: not needed by a client that does not reconnect
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks() {
        let mut p = Parser::new();
        assert!(p.feed(b"data: {\"a\"").is_empty());
        let events =
            p.feed(b":1}\r\n\r\n: keep-alive\n\nevent: message_stop\ndata: {}\n\ndata: [DONE]");
        assert_eq!(
            events,
            [
                Event {
                    event: String::new(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    event: "message_stop".into(),
                    data: "{}".into()
                },
            ]
        );
        assert_eq!(
            p.finish(),
            Some(Event {
                event: String::new(),
                data: "[DONE]".into()
            })
        );
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn multi_line_data_and_utf8_split() {
        let mut p = Parser::new();
        let text = "data: h\u{e9}llo\ndata: world\n\n".as_bytes();
        let (a, b) = text.split_at(8); // splits the two bytes of 'é'
        assert!(p.feed(a).is_empty());
        assert_eq!(p.feed(b)[0].data, "h\u{e9}llo\nworld");
    }
}
