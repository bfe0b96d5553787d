//! What a transfer will do: [`TransferConfig`], [`Strategy`] and [`Plan`], and planning as pure
//! functions of the backend's capabilities and the configuration, tested for every combination
//! of capabilities rather than only the installed device's.

use std::fmt;

use super::super::retry::RetryPolicy;
use crate::backend::Capabilities;

/// How transfers are carried out. The defaults were chosen by measurement on PoCL (see
/// `benches/transfer.rs` and the architecture document).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferConfig {
    /// Transfers up to this many bytes are one direct call.
    pub direct_max: usize,
    /// Bytes per chunk of chunked and pipelined transfers.
    pub chunk_size: usize,
    /// Staging buffers in the pipeline's ring: how many chunks may be in flight at once.
    pub pipeline_depth: usize,
    /// Device queues the chunks of one transfer, or the writes of one batch, are spread over
    /// (the engine's own queue and `queues - 1` more), so they may run at once.
    pub queues: usize,
    /// Which plan large transfers use.
    pub strategy: Strategy,
    /// How transient failures are retried.
    pub retry: RetryPolicy,
    /// Check every transfer's destination against its source with a CRC-32 (costs a read back).
    /// A write is compared with a checksum of the caller's bytes, read back directly; a read
    /// with the device's bytes fetched again through staging, a second path: a corruption is
    /// caught unless it repeats identically on both paths.
    pub verify: bool,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            direct_max: 1 << 20,
            chunk_size: 4 << 20,
            pipeline_depth: 3,
            queues: 2,
            strategy: Strategy::Auto,
            retry: RetryPolicy::default(),
            verify: false,
        }
    }
}

/// Which plan transfers larger than `direct_max` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Pipelined where staging is page-locked memory in front of a separate device (a discrete
    /// GPU); chunked over several queues on a device that shares memory with the host (PoCL);
    /// direct where blocks are host memory.
    #[default]
    Auto,
    /// Always one call.
    Direct,
    /// Chunks of `chunk_size` bytes spread over the engine's queues, enqueued together.
    Chunked,
    /// Through the ring of staging buffers, copying one chunk while the device moves another.
    Pipelined,
    /// Copied in place through a host mapping of the block (zero-copy where the device shares
    /// memory with the host); direct where the device has no mapped access
    /// ([`Capabilities::mapped_access`]).
    Mapped,
}

/// How one transfer will be carried out; `Display` explains it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One backend call.
    Direct,
    /// Chunks spread over several queues, all enqueued before one wait per queue; a failed
    /// chunk is retried alone.
    Chunked {
        /// Bytes per chunk.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
        /// Queues the chunks are spread over.
        queues: usize,
    },
    /// Chunks staged through a ring of page-locked buffers: the host copies chunk k+1 while the
    /// device moves chunk k.
    Pipelined {
        /// Bytes per chunk.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
        /// Staging buffers in the ring.
        depth: usize,
    },
    /// One copy through a host mapping of the destination or source block.
    Mapped,
    /// Many small writes enqueued straight from the caller's memory without waiting, spread
    /// over several queues, and waited for once per queue.
    Batched {
        /// Writes in the batch.
        items: usize,
        /// Bytes in all.
        bytes: usize,
        /// Queues the writes are spread over.
        queues: usize,
    },
    /// Many small writes copied into one page-locked staging buffer, each enqueued from there
    /// without waiting, and waited for once: for devices that copy asynchronously only from
    /// page-locked memory (discrete GPUs).
    BatchedStaged {
        /// Writes in the batch.
        items: usize,
        /// Bytes in all.
        bytes: usize,
    },
    /// Between two devices, one copy from one to the other without host memory in between
    /// ([`Backend::copy_to_peer`](crate::backend::Backend::copy_to_peer)).
    Peer,
    /// Between two devices: read from one into host memory, write to the other, chunk by chunk.
    ThroughHost {
        /// Bytes per chunk.
        chunk: usize,
        /// Number of chunks.
        chunks: usize,
    },
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Plan::Direct => write!(f, "direct: one backend call"),
            Plan::Mapped => write!(f, "mapped: one copy through a host mapping of the block"),
            Plan::Chunked {
                chunk,
                chunks,
                queues,
            } => write!(
                f,
                "chunked: {chunks} chunks of up to {chunk} bytes over {queues} queues, enqueued together"
            ),
            Plan::Pipelined { chunk, chunks, depth } => write!(
                f,
                "pipelined: {chunks} chunks of up to {chunk} bytes through a ring of {depth} staging buffers"
            ),
            Plan::Batched {
                items,
                bytes,
                queues,
            } => write!(
                f,
                "batched: {items} writes ({bytes} bytes) enqueued together over {queues} queues, one wait each"
            ),
            Plan::BatchedStaged { items, bytes } => write!(
                f,
                "batched through staging: {items} writes ({bytes} bytes) through one staging buffer, one wait"
            ),
            Plan::Peer => write!(
                f,
                "peer: one copy from one device to the other, not through host memory"
            ),
            Plan::ThroughHost { chunk, chunks } => write!(
                f,
                "through host: {chunks} chunks of up to {chunk} bytes read from one device and written to the other"
            ),
        }
    }
}

/// How many queues an engine spreads chunks and batches over: its own and `config.queues - 1`
/// more, except where blocks are host memory — there every call is a `memcpy` on the calling
/// thread, and more queues would change nothing.
pub(crate) fn queue_count(caps: &Capabilities, config: &TransferConfig) -> usize {
    if caps.host_addressable {
        1
    } else {
        config.queues
    }
}

/// The plan a host↔device transfer of `len` bytes takes on a device with `caps` under
/// `config`: what [`TransferEngine::plan`](super::TransferEngine::plan) answers. A read may
/// take another ([`plan_read`]).
pub fn plan(caps: &Capabilities, config: &TransferConfig, len: usize) -> Plan {
    plan_with(caps, config, len, config.strategy)
}

/// The plan a device→host read of `len` bytes takes: as [`plan`], except that `Auto` reads
/// through a mapping, whatever the size, where that is the fastest read
/// ([`Capabilities::mapped_reads`]). Writes keep their plan there: a mapped write would wait
/// for the device work still using the block, which a queued write does not.
pub fn plan_read(caps: &Capabilities, config: &TransferConfig, len: usize) -> Plan {
    plan_read_with(caps, config, len, config.strategy)
}

/// [`plan_read`] with `strategy` instead of the configured one.
pub(crate) fn plan_read_with(
    caps: &Capabilities,
    config: &TransferConfig,
    len: usize,
    strategy: Strategy,
) -> Plan {
    match strategy {
        Strategy::Auto if caps.mapped_reads && caps.mapped_access => Plan::Mapped,
        _ => plan_with(caps, config, len, strategy),
    }
}

/// [`plan`] with `strategy` for large transfers instead of the configured one.
pub(crate) fn plan_with(
    caps: &Capabilities,
    config: &TransferConfig,
    len: usize,
    strategy: Strategy,
) -> Plan {
    let strategy = match strategy {
        _ if len <= config.direct_max => Strategy::Direct,
        // Staging pays off where it is DMA-able memory in front of a separate device; on
        // unified memory (PoCL: measured 6.96 GB/s pipelined against 10.8 GB/s direct for
        // 256 MiB) it only adds a copy, but chunks on two queues run on two of the device's
        // threads.
        Strategy::Auto if caps.pinned_staging && !caps.unified_memory => Strategy::Pipelined,
        Strategy::Auto if caps.async_copies && caps.concurrent_queues && !caps.host_addressable => {
            Strategy::Chunked
        }
        Strategy::Auto => Strategy::Direct,
        chosen => chosen,
    };
    let chunks = len.div_ceil(config.chunk_size);
    match strategy {
        Strategy::Direct | Strategy::Auto => Plan::Direct,
        Strategy::Mapped if caps.mapped_access || caps.host_addressable => Plan::Mapped,
        Strategy::Mapped => Plan::Direct,
        Strategy::Chunked => Plan::Chunked {
            chunk: config.chunk_size,
            chunks,
            queues: queue_count(caps, config).min(chunks),
        },
        Strategy::Pipelined => Plan::Pipelined {
            chunk: config.chunk_size,
            chunks,
            depth: config.pipeline_depth.min(chunks),
        },
    }
}

/// The plan for a batch of `items` writes of `bytes` bytes in all. A configured strategy other
/// than `Auto` forces one: `Chunked` batches over the queues, `Pipelined` through staging,
/// `Direct` and `Mapped` one call per item.
pub fn plan_batch(
    caps: &Capabilities,
    config: &TransferConfig,
    items: usize,
    bytes: usize,
) -> Plan {
    let staged = match config.strategy {
        _ if items < 2 => return Plan::Direct,
        Strategy::Direct | Strategy::Mapped => return Plan::Direct,
        Strategy::Chunked => false,
        Strategy::Pipelined => true,
        Strategy::Auto
            if caps.host_addressable || !caps.async_copies || !caps.concurrent_queues =>
        {
            return Plan::Direct
        }
        Strategy::Auto => caps.pinned_staging && !caps.unified_memory,
    };
    if staged {
        Plan::BatchedStaged { items, bytes }
    } else {
        Plan::Batched {
            items,
            bytes,
            queues: batch_queues(caps, config).min(items),
        }
    }
}

/// Queues a batch of small writes spreads over: one on unified memory (a CPU device, an
/// integrated GPU), where the queues share the host's cores and memory and more of them only
/// wake more of the driver's threads per command (PoCL, 1000 × 4 KiB, against the hand-written
/// one-queue sequence: one queue 0.80×, two 0.45–0.58×).
fn batch_queues(caps: &Capabilities, config: &TransferConfig) -> usize {
    match caps.unified_memory {
        true => 1,
        false => queue_count(caps, config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PeerDomain;

    const MIB: usize = 1 << 20;

    /// Every one of the 256 combinations of the eight capabilities (with or without a peer
    /// domain).
    fn every_capability_set() -> impl Iterator<Item = Capabilities> {
        let domain = PeerDomain::unique();
        (0u16..256).map(move |bits| Capabilities {
            unified_memory: bits & 1 != 0,
            peer_domain: (bits & 2 != 0).then_some(domain),
            async_copies: bits & 4 != 0,
            pinned_staging: bits & 8 != 0,
            host_addressable: bits & 16 != 0,
            mapped_access: bits & 32 != 0,
            concurrent_queues: bits & 64 != 0,
            mapped_reads: bits & 128 != 0,
            // Shared allocations are never transferred: no plan reads it.
            shared_allocations: false,
        })
    }

    /// What `Auto` must choose for a large transfer, written as the decision table reads.
    fn expected_auto(caps: &Capabilities, len: usize, config: &TransferConfig) -> Plan {
        let chunks = len.div_ceil(config.chunk_size);
        if caps.pinned_staging && !caps.unified_memory {
            Plan::Pipelined {
                chunk: config.chunk_size,
                chunks,
                depth: config.pipeline_depth.min(chunks),
            }
        } else if caps.async_copies && caps.concurrent_queues && !caps.host_addressable {
            Plan::Chunked {
                chunk: config.chunk_size,
                chunks,
                queues: config.queues.min(chunks),
            }
        } else {
            Plan::Direct
        }
    }

    #[test]
    fn auto_follows_the_table_for_every_capability_set() {
        let config = TransferConfig::default();
        for caps in every_capability_set() {
            for len in [1, config.direct_max, config.direct_max + 1, 64 * MIB + 3] {
                let want = if len <= config.direct_max {
                    Plan::Direct
                } else {
                    expected_auto(&caps, len, &config)
                };
                assert_eq!(plan(&caps, &config, len), want, "{caps:?}, {len} bytes");
            }
        }
    }

    /// Reads follow the same table, except that `Auto` maps every read where mapped reads are
    /// the fastest and the device maps; a forced strategy is obeyed as for writes.
    #[test]
    fn reads_map_where_mapped_reads_are_fastest() {
        let config = TransferConfig::default();
        for caps in every_capability_set() {
            for len in [1, config.direct_max + 1, 64 * MIB + 3] {
                let want = if caps.mapped_reads && caps.mapped_access {
                    Plan::Mapped
                } else {
                    plan(&caps, &config, len)
                };
                assert_eq!(
                    plan_read(&caps, &config, len),
                    want,
                    "{caps:?}, {len} bytes"
                );
                for strategy in [Strategy::Direct, Strategy::Chunked, Strategy::Pipelined] {
                    assert_eq!(
                        plan_read_with(&caps, &config, len, strategy),
                        plan_with(&caps, &config, len, strategy)
                    );
                }
            }
        }
    }

    #[test]
    fn a_forced_strategy_is_obeyed_on_every_device() {
        let big = 10 * MIB + 1;
        for caps in every_capability_set() {
            let queues = if caps.host_addressable { 1 } else { 3 };
            let with = |strategy| TransferConfig {
                strategy,
                queues: 3,
                chunk_size: MIB,
                ..TransferConfig::default()
            };
            assert_eq!(plan(&caps, &with(Strategy::Direct), big), Plan::Direct);
            let mapped = if caps.mapped_access || caps.host_addressable {
                Plan::Mapped
            } else {
                Plan::Direct
            };
            assert_eq!(
                plan(&caps, &with(Strategy::Mapped), big),
                mapped,
                "{caps:?}"
            );
            assert_eq!(
                plan(&caps, &with(Strategy::Chunked), big),
                Plan::Chunked {
                    chunk: MIB,
                    chunks: 11,
                    queues
                },
                "{caps:?}"
            );
            assert_eq!(
                plan(&caps, &with(Strategy::Pipelined), big),
                Plan::Pipelined {
                    chunk: MIB,
                    chunks: 11,
                    depth: 3
                }
            );
            // Small transfers stay direct whatever is forced.
            assert_eq!(plan(&caps, &with(Strategy::Pipelined), 100), Plan::Direct);
        }
    }

    #[test]
    fn batches_follow_the_table_for_every_capability_set() {
        let config = TransferConfig::default();
        for caps in every_capability_set() {
            let got = plan_batch(&caps, &config, 1000, 4_096_000);
            let want = if caps.host_addressable || !caps.async_copies || !caps.concurrent_queues {
                Plan::Direct
            } else if caps.pinned_staging && !caps.unified_memory {
                Plan::BatchedStaged {
                    items: 1000,
                    bytes: 4_096_000,
                }
            } else {
                Plan::Batched {
                    items: 1000,
                    bytes: 4_096_000,
                    queues: if caps.unified_memory {
                        1
                    } else {
                        config.queues
                    },
                }
            };
            assert_eq!(got, want, "{caps:?}");
            assert_eq!(plan_batch(&caps, &config, 1, 10), Plan::Direct);
            let forced = TransferConfig {
                strategy: Strategy::Chunked,
                ..config
            };
            assert!(matches!(
                plan_batch(&caps, &forced, 2, 20),
                Plan::Batched { items: 2, .. }
            ));
        }
    }

    #[test]
    fn every_plan_explains_itself() {
        let plans = [
            Plan::Direct,
            Plan::Mapped,
            Plan::Peer,
            Plan::Chunked {
                chunk: 4,
                chunks: 2,
                queues: 2,
            },
            Plan::Pipelined {
                chunk: 4,
                chunks: 2,
                depth: 2,
            },
            Plan::Batched {
                items: 3,
                bytes: 9,
                queues: 2,
            },
            Plan::BatchedStaged { items: 3, bytes: 9 },
            Plan::ThroughHost {
                chunk: 4,
                chunks: 2,
            },
        ];
        let texts: Vec<String> = plans.iter().map(Plan::to_string).collect();
        assert!(texts[3].contains("2 chunks of up to 4 bytes over 2 queues"));
        assert!(texts[5].contains("3 writes (9 bytes)"));
        let unique: std::collections::HashSet<_> = texts.iter().collect();
        assert_eq!(unique.len(), plans.len(), "each plan reads differently");
    }
}
