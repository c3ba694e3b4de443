package wire

import (
	"encoding/json"
	"testing"
)

// The JSON field names are the protocol: this pins them.
func TestTaskJSON(t *testing.T) {
	task := Task{JobID: "j1", Kind: KindProvision, TargetDisk: "nvme0n1", After: AfterReboot, Image: &ImageSpec{
		URL: "/images/ubuntu.zst", Format: "raw.zst", Size: 100, SHA256: "ab", UncompressedSize: 400,
		BlockMap: []Range{{Offset: 0, Length: 65536}}}}
	b, err := json.Marshal(task)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"job_id":"j1","kind":"provision","image":{"url":"/images/ubuntu.zst","format":"raw.zst","size":100,"sha256":"ab","uncompressed_size":400,"block_map":[{"offset":0,"length":65536}]},"target_disk":"nvme0n1","after":"reboot"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	var back Task
	if err := json.Unmarshal(b, &back); err != nil || back.Image.BlockMap[0].Length != 65536 {
		t.Errorf("round trip: %+v %v", back, err)
	}
	b, _ = json.Marshal(Done{JobID: "j1", OK: false, Error: "boom", Step: StepVerify})
	if string(b) != `{"job_id":"j1","ok":false,"error":"boom","step":"verify"}` {
		t.Errorf("done: %s", b)
	}
	b, _ = json.Marshal(Progress{JobID: "j1", Step: StepWrite, Bytes: 1, Total: 2, Rate: 3})
	if string(b) != `{"job_id":"j1","step":"write","bytes":1,"total":2,"rate":3}` {
		t.Errorf("progress: %s", b)
	}
}
