//! The few SDP text operations str0m does not do for the SFU: which kinds an offer sends, and
//! giving the m-lines of an answer the ids of the tracks they carry.

use std::collections::HashMap;

/// For each m-line of an offer: its kind (`audio`, `video`, ...) and whether the offerer sends
/// on it (`sendrecv`, the default, or `sendonly`, on a port other than 0).
pub fn sending_kinds(offer: &str) -> Vec<(&str, bool)> {
    let mut out: Vec<(&str, bool)> = Vec::new();
    for line in offer.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("m=") {
            let mut fields = rest.split(' ');
            let kind = fields.next().unwrap_or("");
            let port_zero = fields.next() == Some("0");
            out.push((kind, !port_zero));
        } else if let Some(last) = out.last_mut() {
            match line {
                "a=recvonly" | "a=inactive" => last.1 = false,
                _ => {}
            }
        }
    }
    out
}

/// The `a=mid` values of an SDP, in order.
pub fn mids(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .collect()
}

/// Rewrites `a=msid:` and `a=ssrc:<n> msid:` lines of the m-lines whose `a=mid` is in `labels`
/// to `<stream_id> <track_id>`.
pub fn relabel(answer: &str, labels: &HashMap<String, (&str, &str)>) -> String {
    if labels.is_empty() {
        return answer.to_owned();
    }
    let lines: Vec<&str> = answer.split("\r\n").collect();
    let mut out = String::with_capacity(answer.len() + 64 * labels.len());
    let mut start = 0;
    while start < lines.len() {
        // One section: from an m= line (or the session start) to the next.
        let mut end = start + 1;
        while end < lines.len() && !lines[end].starts_with("m=") {
            end += 1;
        }
        let section = &lines[start..end];
        let label = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .and_then(|mid| labels.get(mid.trim()));
        for (i, line) in section.iter().enumerate() {
            if start + i > 0 {
                out.push_str("\r\n");
            }
            match label {
                Some((stream, track)) if line.starts_with("a=msid:") => {
                    out.push_str(&format!("a=msid:{stream} {track}"));
                }
                Some((stream, track)) if line.starts_with("a=ssrc:") && line.contains(" msid:") => {
                    let head = &line[..line.find(" msid:").expect("checked")];
                    out.push_str(&format!("{head} msid:{stream} {track}"));
                }
                _ => out.push_str(line),
            }
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_directions_of_an_offer() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
        assert_eq!(
            sending_kinds(offer),
            vec![
                ("audio", true),
                ("video", false),
                ("video", false),
                ("video", true)
            ]
        );
    }

    #[test]
    fn relabels_only_the_named_sections() {
        let answer = "v=0\r\na=msid-semantic: WMS *\r\nm=audio 9 X 111\r\na=mid:0\r\na=msid:old oldtrack\r\na=ssrc:5 cname:x\r\na=ssrc:5 msid:old oldtrack\r\nm=video 9 X 96\r\na=mid:1\r\na=msid:keep this\r\n";
        let labels = HashMap::from([("0".to_owned(), ("s1", "t1"))]);
        let out = relabel(answer, &labels);
        assert_eq!(
            out,
            "v=0\r\na=msid-semantic: WMS *\r\nm=audio 9 X 111\r\na=mid:0\r\na=msid:s1 t1\r\na=ssrc:5 cname:x\r\na=ssrc:5 msid:s1 t1\r\nm=video 9 X 96\r\na=mid:1\r\na=msid:keep this\r\n"
        );
    }
}
