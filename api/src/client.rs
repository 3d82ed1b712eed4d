//! A blocking client: one connection, one request line, one response line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::{ApiError, Op, Request, Response, PROTOCOL_VERSION};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached: tapwayd is not running or the path is wrong.
    #[error("cannot connect to tapwayd at {path}: {source}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The connection broke or timed out mid-call.
    #[error("talking to tapwayd: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon's answer was not a valid response.
    #[error("tapwayd sent an unreadable answer: {0}")]
    Decode(#[from] serde_json::Error),
    /// The daemon closed the connection without answering.
    #[error("tapwayd closed the connection without an answer")]
    NoAnswer,
    /// The daemon answered with an error.
    #[error("tapwayd: {0}")]
    Api(#[from] ApiError),
}

/// A client of one tapwayd control socket.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the socket at `path`, with a 30 s timeout per call (attach configures a netns
    /// and may take a while on a loaded node).
    pub fn new(path: impl AsRef<Path>) -> Self {
        Client { path: path.as_ref().to_path_buf(), timeout: Duration::from_secs(30) }
    }

    /// Sets the per-call read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `op` and decodes the result as `T`.
    pub fn call<T: DeserializeOwned>(&self, op: Op) -> Result<T, ClientError> {
        self.call_with(op, false)
    }

    /// [`Client::call`] with the request's `force` flag set as given.
    pub fn call_with<T: DeserializeOwned>(&self, op: Op, force: bool) -> Result<T, ClientError> {
        let resp = self.raw(&Request { v: PROTOCOL_VERSION, op, force })?;
        match (resp.ok, resp.result, resp.error) {
            (true, Some(v), _) => Ok(serde_json::from_value(v)?),
            (true, None, _) => Ok(serde_json::from_value(serde_json::Value::Null)?),
            (false, _, Some(e)) => Err(ClientError::Api(e)),
            (false, _, None) => Err(ClientError::NoAnswer),
        }
    }

    /// Sends one request and returns the response as it came, error or not.
    pub fn raw(&self, req: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        let answer = self.raw_line(&line)?;
        Ok(serde_json::from_str(&answer)?)
    }

    /// Sends bytes as they are and returns the answer line. For tests of the daemon's parser.
    pub fn raw_line(&self, bytes: &[u8]) -> Result<String, ClientError> {
        let mut stream = UnixStream::connect(&self.path)
            .map_err(|source| ClientError::Connect { path: self.path.clone(), source })?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let written = stream.write_all(bytes);
        // A daemon that refuses the connection (permission, limit) answers and closes without
        // reading; the write may then fail with EPIPE while its answer is waiting to be read.
        let mut answer = String::new();
        let read = BufReader::new(stream).read_line(&mut answer);
        if !answer.is_empty() {
            return Ok(answer);
        }
        written?;
        read?;
        Err(ClientError::NoAnswer)
    }
}
