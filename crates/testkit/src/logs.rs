use std::io::Write;
use std::sync::{Arc, Mutex};

/// Captures every log line (TRACE and up) of the whole test process, for
/// tests that assert something never reaches the logs. Install once per test
/// binary.
#[derive(Debug, Clone)]
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Installs the process-wide subscriber at TRACE. Panics if another one
    /// is already installed.
    pub fn install() -> Self {
        Self::install_with(|_| true)
    }

    /// Like [`LogCapture::install`], keeping only the records `allows`
    /// accepts (the filter a production subscriber applies).
    pub fn install_with(allows: fn(&tracing::Metadata<'_>) -> bool) -> Self {
        use tracing_subscriber::layer::SubscriberExt as _;
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer_buffer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(writer_buffer.clone()))
            .finish()
            .with(tracing_subscriber::filter::filter_fn(allows));
        tracing::subscriber::set_global_default(subscriber)
            .expect("a global subscriber was already installed");
        Self { buffer }
    }

    /// Everything logged so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(
            &self
                .buffer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}
