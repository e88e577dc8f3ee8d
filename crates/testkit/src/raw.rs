//! A raw HTTP/1.1 client for what an ordinary client will not send: chunk boundaries of the
//! test's choosing, pauses between writes, malformed framing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body (Content-Length bodies only, as the receiver sends).
    pub body: Vec<u8>,
}

/// Where the head of `buffer` ends, its status and its Content-Length (0 when absent).
fn head(buffer: &[u8]) -> Option<(usize, u16, usize)> {
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buffer[..end]);
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let length = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    });
    Some((end, status, length.unwrap_or(0)))
}

/// Parses one whole response held in `bytes`.
pub fn parse_response(bytes: &[u8]) -> Option<RawResponse> {
    let (end, status, length) = head(bytes)?;
    let body = bytes.get(end..end + length)?.to_vec();
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    Some(RawResponse { status, head, body })
}

/// Reads one response from `stream`; `None` when it ends before a whole response came.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<RawResponse> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((end, _, length)) = head(&buffer)
            && buffer.len() >= end + length
        {
            return parse_response(&buffer);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the peer closed the connection: a read sees end of file or a reset within 5 s.
pub async fn is_closed(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// Sends `request` on a new connection and reads the response.
///
/// # Errors
/// When the connection fails or ends before a whole response came.
pub async fn send(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let response = read_response(&mut stream).await;
    response.ok_or_else(|| std::io::Error::other("the connection ended before a whole response"))
}

/// [`send`], for tests.
///
/// # Panics
/// When the connection fails or no whole response comes.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    send(addr, request).await.expect("a response")
}

/// The writes of a chunked request, one per chunk of `piece` body bytes: the head (with a
/// `Preservica-Signature` header when `signature` is given), each chunk with its framing, the
/// terminating chunk.
pub fn chunked_writes(
    method: &str,
    target: &str,
    signature: Option<&str>,
    body: &[u8],
    piece: usize,
) -> Vec<Vec<u8>> {
    let signature = signature
        .map(|value| format!("Preservica-Signature: {value}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{signature}\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut writes = vec![head.into_bytes()];
    for part in body.chunks(piece.max(1)) {
        let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
        chunk.extend_from_slice(part);
        chunk.extend_from_slice(b"\r\n");
        writes.push(chunk);
    }
    writes.push(b"0\r\n\r\n".to_vec());
    writes
}

/// A signed chunked POST of `body` in pieces of `piece` bytes, as one buffer.
pub fn chunked_request(path: &str, signature: &str, body: &[u8], piece: usize) -> Vec<u8> {
    chunked_writes("POST", path, Some(signature), body, piece).concat()
}

/// A signed POST of `body` with Content-Length.
pub fn length_request(path: &str, signature: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nPreservica-Signature: {signature}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_responses_only() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let response = parse_response(answer).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"ok"[..])
        );
        assert!(parse_response(&answer[..answer.len() - 1]).is_none());
        let chunked = chunked_request("/", "sig", b"abcde", 2);
        let text = String::from_utf8(chunked).unwrap();
        assert!(
            text.ends_with("\r\n\r\n2\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n0\r\n\r\n"),
            "{text}"
        );
    }
}
