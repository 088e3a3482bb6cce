//! Multipart uploads streamed to disk as they arrive: the connection driver feeds body pieces
//! to a [`Spooler`], which runs the sans-IO [`MultipartStream`] over them, writes every file
//! part to its own temp file under `<data_dir>/uploads/` and keeps the (small) text fields in
//! memory. The handler then sees an [`Upload`]. Each temp file is owned by a [`TempFile`] from
//! before it is created, and removed when that is dropped: on success, on refusal, on a broken
//! form, on a client that disconnects halfway, on a panic. Files left by a crash are removed at
//! start ([`prepare_dir`]).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::io::{BufferedFile, StreamWriter, StreamWriterBuilder};

use crate::http::HttpError;
use crate::http::limits::MAX_MULTIPART_TEXT_BYTES;
use crate::http::multipart::{MultipartError, MultipartEvent, MultipartStream, PartHead};

/// Folder of upload temp files, under the data dir.
pub const UPLOAD_DIR: &str = "uploads";
/// Bytes a temp file writer gathers before it writes.
const WRITE_BUFFER: usize = 128 * 1024;

/// Creates `<data_dir>/uploads` and empties it (no upload can be in flight before start).
pub fn prepare_dir(data_dir: &Path) -> std::io::Result<PathBuf> {
    let dir = data_dir.join(UPLOAD_DIR);
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(dir)
}

/// A temp file, removed when this is dropped.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    len: u64,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // One unlink; a file that was never created is fine.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
pub enum FieldData {
    Text(Vec<u8>),
    File(TempFile),
}

/// One part of an uploaded form.
#[derive(Debug)]
pub struct UploadField {
    pub name: String,
    /// As sent; not a safe path.
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: FieldData,
}

impl UploadField {
    /// The parts that go to disk: anything with a file name, or named like a file field.
    fn is_file(head: &PartHead) -> bool {
        head.filename.is_some() || matches!(head.name.as_str(), "file" | "files" | "files[]")
    }

    pub fn text(&self) -> Option<&[u8]> {
        match &self.data {
            FieldData::Text(t) => Some(t),
            FieldData::File(_) => None,
        }
    }

    pub fn file(&self) -> Option<&TempFile> {
        match &self.data {
            FieldData::File(f) => Some(f),
            FieldData::Text(_) => None,
        }
    }
}

/// A complete multipart form whose files are on disk.
#[derive(Debug, Default)]
pub struct Upload {
    pub fields: Vec<UploadField>,
}

/// Why an upload could not be taken in.
#[derive(Debug)]
pub enum SpoolError {
    /// The form is broken or too big (400/413): answer it.
    Form(HttpError),
    /// A temp file could not be written.
    Io(std::io::Error),
}

impl From<MultipartError> for SpoolError {
    fn from(e: MultipartError) -> Self {
        SpoolError::Form(e.into())
    }
}

/// Takes one multipart body in, piece by piece.
pub struct Spooler {
    stream: MultipartStream,
    dir: PathBuf,
    fields: Vec<UploadField>,
    writer: Option<StreamWriter>,
}

impl Spooler {
    pub fn new(dir: PathBuf, boundary: &str) -> Result<Spooler, SpoolError> {
        Ok(Spooler {
            stream: MultipartStream::new(boundary)?,
            dir,
            fields: Vec::new(),
            writer: None,
        })
    }

    /// The next piece of the body.
    pub async fn feed(&mut self, piece: &[u8]) -> Result<(), SpoolError> {
        self.stream.feed(piece);
        loop {
            let event = self.stream.next_event()?;
            if !self.apply(event).await? {
                return Ok(());
            }
        }
    }

    /// The body has ended: the complete form, or why it is not one.
    pub async fn finish(mut self) -> Result<Upload, SpoolError> {
        loop {
            let event = self.stream.finish()?;
            let done = matches!(event, None | Some(MultipartEvent::End));
            self.apply(event).await?;
            if done {
                break;
            }
        }
        self.close_file().await?;
        Ok(Upload {
            fields: std::mem::take(&mut self.fields),
        })
    }

    /// Applies one event; false when more body is needed.
    async fn apply(&mut self, event: Option<MultipartEvent>) -> Result<bool, SpoolError> {
        match event {
            None => Ok(false),
            Some(MultipartEvent::Part(head)) => {
                self.close_file().await?;
                let data = if UploadField::is_file(&head) {
                    // The guard exists before the file does.
                    let temp = TempFile {
                        path: self.dir.join(format!(
                            "{:016x}{:016x}",
                            rand::random::<u64>(),
                            rand::random::<u64>()
                        )),
                        len: 0,
                    };
                    let file = BufferedFile::create(&temp.path)
                        .await
                        .map_err(|e| SpoolError::Io(e.into()))?;
                    self.writer = Some(
                        StreamWriterBuilder::new(file)
                            .with_sync_on_close_disabled(true)
                            .with_buffer_size(WRITE_BUFFER)
                            .build(),
                    );
                    FieldData::File(temp)
                } else {
                    FieldData::Text(Vec::new())
                };
                self.fields.push(UploadField {
                    name: head.name,
                    filename: head.filename,
                    content_type: head.content_type,
                    data,
                });
                Ok(true)
            }
            Some(MultipartEvent::Data(bytes)) => {
                self.write(bytes).await?;
                Ok(true)
            }
            Some(MultipartEvent::End) => {
                self.close_file().await?;
                Ok(false)
            }
        }
    }

    async fn write(&mut self, bytes: Bytes) -> Result<(), SpoolError> {
        let Some(field) = self.fields.last_mut() else {
            return Ok(());
        };
        match &mut field.data {
            FieldData::Text(text) => {
                if text.len() + bytes.len() > MAX_MULTIPART_TEXT_BYTES {
                    return Err(SpoolError::Form(HttpError::payload_too_large(
                        "multipart text field too large",
                    )));
                }
                text.extend_from_slice(&bytes);
            }
            FieldData::File(temp) => {
                if let Some(writer) = self.writer.as_mut() {
                    writer.write_all(&bytes).await.map_err(SpoolError::Io)?;
                }
                temp.len += bytes.len() as u64;
            }
        }
        Ok(())
    }

    async fn close_file(&mut self) -> Result<(), SpoolError> {
        if let Some(mut writer) = self.writer.take() {
            writer.close().await.map_err(SpoolError::Io)?;
        }
        Ok(())
    }
}
