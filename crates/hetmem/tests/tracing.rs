//! The `tracing` feature against a real subscriber. Alone in its test binary: tracing caches
//! each callsite's interest process-wide, so a test allocating on another thread without a
//! subscriber could make these spans look uninteresting here.

#[cfg(feature = "tracing")]
#[test]
fn pool_misses_and_transfers_open_spans() {
    use std::sync::{Arc, Mutex};

    use hetmem::backend::{Backend, HostBackend};
    use tracing::span::{Attributes, Id};
    use tracing::Subscriber;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    /// Records the name of every span opened.
    struct Names(Arc<Mutex<Vec<String>>>);
    impl<S: Subscriber> Layer<S> for Names {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            self.0
                .lock()
                .unwrap()
                .push(attrs.metadata().name().to_owned());
        }
    }

    let names = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Names(names.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let manager = hetmem::MemoryManager::host();
        let first = manager.alloc::<u8>(4096).unwrap(); // a miss: the pool is empty
        drop(first);
        let _hit = manager.alloc::<u8>(4096).unwrap(); // a hit: no span
        let backend = Arc::new(HostBackend::new());
        let engine = hetmem::transfer::TransferEngine::new(backend.clone());
        let mut block = backend.allocate(64).unwrap();
        engine.write(&mut block, 0, &[1; 64]).unwrap();
        backend.release(block).unwrap();
    });
    let names = names.lock().unwrap();
    assert_eq!(
        names.iter().filter(|n| *n == "hetmem.pool_miss").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "hetmem.transfer").count(),
        1,
        "{names:?}"
    );
}
