//! Views and ranged operations of unified buffers on every backend present: a view aliases its
//! parent's memory, and ranged reads, writes, fills and copies use the newest copy of each range.

mod common;

use std::sync::Arc;

use common::buffers::{alloc, device_write, from_slice, mirrored, values};
use common::device_contents;
use hetmem::backend::{Backend, HostBackend};
use hetmem::buffer::{BufferContext, CoherenceState, Residency, UnifiedBuffer};

fn views_alias_their_parent(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let mut buf = from_slice(&ctx, &values(100, 4));
    let mut expect = values(100, 4);
    {
        let mut view = buf.slice_mut(10..20).unwrap();
        assert_eq!(view.len(), 10);
        assert_eq!(view.byte_offset(), 40);
        view.host_mut().unwrap()[0] = 1;
        let mut inner = view.slice_mut(5..).unwrap();
        inner.write(1, &[2]).unwrap();
        assert_eq!(
            inner.to_vec().unwrap(),
            vec![expect[15], 2, expect[17], expect[18], expect[19]]
        );
    }
    expect[10] = 1;
    expect[16] = 2;
    assert_eq!(buf.to_vec().unwrap(), expect);

    // A device write through a view lands in the parent at the view's offset.
    {
        let mut view = buf.slice_mut(50..52).unwrap();
        let mut d = view.device_mut().unwrap();
        assert_eq!((d.offset(), d.byte_len()), (200, 8));
        let (q, offset) = (d.queue().clone(), d.offset());
        b.write(&q, d.block_mut(), offset, bytemuck::cast_slice(&[9u32, 8]))
            .unwrap();
    }
    expect[50] = 9;
    expect[51] = 8;
    assert_eq!(&*buf.host().unwrap(), &expect[..]);

    // A cast view reinterprets the same bytes.
    let bytes = buf.cast::<u8>().unwrap();
    assert_eq!(bytes.len(), 400);
    assert_eq!(
        bytes.to_vec().unwrap(),
        bytemuck::cast_slice::<u32, u8>(&expect)
    );
    let middle = buf.slice(2..6).unwrap();
    let pairs = middle.cast::<[u32; 2]>().unwrap();
    assert_eq!(
        pairs.to_vec().unwrap(),
        vec![[expect[2], expect[3]], [expect[4], expect[5]]]
    );
    {
        let mut halves = buf.cast_mut::<u16>().unwrap();
        halves.write(0, &[0xffff, 0xffff]).unwrap();
    }
    assert_eq!(buf.to_vec().unwrap()[0], u32::MAX);
}

fn ranged_operations_use_the_newest_copy(b: &Arc<dyn Backend>) {
    let ctx = mirrored(b);
    let mut buf = alloc(&ctx, 64);
    assert_eq!(
        buf.to_vec().unwrap(),
        vec![0; 64],
        "a new buffer reads as zeros"
    );
    let data = values(64, 5);
    device_write(b, &mut buf, &data); // device only: Uninitialized → DeviceOnly, zeroed first
    assert_eq!(buf.state(), CoherenceState::DeviceOnly);

    // Reads and writes go straight to the device: no download of the whole buffer.
    let mut two = [0u32; 2];
    buf.read(30, &mut two).unwrap();
    assert_eq!(two, [data[30], data[31]]);
    buf.write(3, &[42, 43]).unwrap();
    buf.fill(7, 40..44).unwrap();
    assert_eq!(buf.state(), CoherenceState::DeviceOnly);
    assert_eq!(
        buf.metrics().device_to_host.bytes,
        8,
        "only the read elements came back"
    );
    let mut expect = data.clone();
    expect[3..5].copy_from_slice(&[42, 43]);
    expect[40..44].fill(7);
    assert_eq!(device_contents(b, &buf), expect);
    // An empty range reads nothing, and asks the device for nothing (found by fuzzing: an
    // asynchronous read of 0..0 failed with "zero-length transfer source").
    assert_eq!(
        buf.read_async(9..9).unwrap().wait().unwrap(),
        Vec::<u32>::new()
    );
    buf.fill(1, 9..9).unwrap();
    assert_eq!(buf.state(), CoherenceState::DeviceOnly);

    // Host-side fills and writes after a sync mark only their ranges.
    buf.sync().unwrap().wait().unwrap();
    buf.fill(1, 0..2).unwrap();
    expect[0..2].fill(1);
    assert_eq!(buf.state(), CoherenceState::HostDirty);
    assert_eq!(device_contents(b, &buf), expect);

    // Copies: device to device on one device, through the host across devices.
    let mut copy = alloc(&ctx, 64);
    copy.copy_from(&buf).unwrap();
    assert_eq!(copy.metrics().device_to_device.transfers, 1);
    assert_eq!(copy.state(), CoherenceState::DeviceOnly);
    assert_eq!(copy.to_vec().unwrap(), expect);
    let other_ctx = BufferContext::new(Arc::new(HostBackend::new()));
    let mut elsewhere: UnifiedBuffer<u32> = other_ctx.alloc_with(64, Residency::Mirrored).unwrap();
    elsewhere.copy_from(&buf).unwrap();
    assert_eq!(elsewhere.metrics().device_to_device.transfers, 0);
    assert_eq!(elsewhere.to_vec().unwrap(), expect);
    let mut part = alloc(&ctx, 4);
    part.copy_from(&buf.slice(10..14).unwrap()).unwrap();
    assert_eq!(part.to_vec().unwrap(), &expect[10..14]);
}

common::backend_suite!(
    [
        host => crate::common::host(),
        opencl_dev0 => crate::common::opencl(0),
        wgpu => crate::common::wgpu(),
        cuda_dev0 => crate::common::cuda(0),
    ],
    [views_alias_their_parent, ranged_operations_use_the_newest_copy]
);
