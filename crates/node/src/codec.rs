//! The request-response codec of every Tributary protocol: a request or response is one
//! protobuf message, the whole of its stream.
//!
//! Reads are bounded. A request may be read one byte past its limit so the protocol core sees
//! it is oversized and refuses the peer (the core, not the transport, decides penalties); a
//! response over its limit is an error, which fails the request.

use std::io;

use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::Codec;

/// Length-bounded whole-stream bytes.
#[derive(Clone, Copy, Debug)]
pub struct BytesCodec {
    max_request: usize,
    max_response: usize,
}

impl BytesCodec {
    /// A codec with these limits.
    #[must_use]
    pub fn new(max_request: usize, max_response: usize) -> Self {
        Self {
            max_request,
            max_response,
        }
    }
}

async fn read_at_most<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    io.take(limit as u64).read_to_end(&mut out).await?;
    Ok(out)
}

impl Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // One byte over the limit is read, so the protocol sees an oversized request and can
        // hold it against the peer; nothing more is.
        read_at_most(io, self.max_request + 1).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_at_most(io, self.max_response + 1).await?;
        if bytes.is_empty() && self.max_response > 0 {
            // A peer that declines (say, a state-sync server without the root asked for)
            // closes the stream without an answer; no valid answer of a protocol with
            // responses is empty, so this fails the request instead of being judged.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"));
        }
        if bytes.len() > self.max_response {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("response over {} bytes", self.max_response),
            ));
        }
        Ok(bytes)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}
