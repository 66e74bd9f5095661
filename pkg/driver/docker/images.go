package docker

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/openagent/orchestrator/internal/version"
	"github.com/openagent/orchestrator/pkg/driver"
)

// The sandbox images, built from this host's files: no registry is needed.
const (
	ImageShell  = "openagent/sandbox:shell"  // busybox: a shell and coreutils
	ImagePython = "openagent/sandbox:python" // the shell image plus a Python 3 interpreter
)

// imageDescription says what each image is, in its OCI description.
var imageDescription = map[string]string{
	ImageShell:  "OpenAgent sandbox: a busybox shell and coreutils, built locally",
	ImagePython: "OpenAgent sandbox: the shell image with a Python 3 interpreter, built locally",
}

const passwd = "root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
const group = "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n"

// recipe is the version of the images' recipes: an image built by an
// older one is built again.
const recipe = "2"

// labelRecipe carries the recipe an image was built by.
const labelRecipe = "io.openagent.image-recipe"

// EnsureImages builds the sandbox images that are missing, or that an
// older recipe built.
func EnsureImages(ctx context.Context, cli *client.Client, w io.Writer) error {
	for _, img := range []string{ImageShell, ImagePython} {
		if in, err := cli.ImageInspect(ctx, img); err == nil {
			if in.Config != nil && in.Config.Labels[labelRecipe] == recipe {
				continue
			}
		} else if !errdefs.IsNotFound(err) {
			return err
		}
		if err := BuildImage(ctx, cli, img, w); err != nil {
			return err
		}
	}
	return nil
}

// BuildImage builds one sandbox image. The shell image needs busybox
// (Debian's busybox-static); the python image, python3 (python3-minimal).
func BuildImage(ctx context.Context, cli *client.Client, image string, w io.Writer) error {
	var files map[string]string // path in the context → host path
	var dockerfile string
	switch image {
	case ImageShell:
		bb, err := exec.LookPath("busybox")
		if err != nil {
			return fmt.Errorf("docker: building %s needs busybox (apt-get install busybox-static): %w", image, err)
		}
		files = map[string]string{"busybox": bb}
		dockerfile = `FROM scratch
COPY busybox /bin/busybox
COPY passwd group /etc/
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /home/sandbox /workspace && chmod 1777 /tmp && chown 1000:1000 /home/sandbox /workspace
ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/sandbox
WORKDIR /workspace
CMD ["/bin/sh"]
`
	case ImagePython:
		if _, err := cli.ImageInspect(ctx, ImageShell); err != nil {
			if err := BuildImage(ctx, cli, ImageShell, w); err != nil {
				return err
			}
		}
		// Debian's interpreter, whose standard library is in /usr/lib.
		py, err := exec.LookPath("/usr/bin/python3")
		if err != nil {
			return fmt.Errorf("docker: building %s needs python3 (apt-get install python3-minimal): %w", image, err)
		}
		py, _ = filepath.EvalSymlinks(py)
		libs, err := sharedLibs(py)
		if err != nil {
			return err
		}
		files = map[string]string{"rootfs/usr/bin/python3": py}
		for _, l := range libs {
			files["rootfs"+l] = l
		}
		stdlib := "/usr/lib/" + filepath.Base(py)
		err = filepath.WalkDir(stdlib, func(p string, de fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if de.IsDir() && (de.Name() == "test" || de.Name() == "__pycache__" || de.Name() == "idlelib" || de.Name() == "tkinter" || de.Name() == "ensurepip") {
				return filepath.SkipDir
			}
			if de.Type().IsRegular() {
				files["rootfs"+p] = p
			}
			return nil
		})
		if err != nil {
			return err
		}
		dockerfile = "FROM " + ImageShell + "\nCOPY rootfs/ /\nRUN ln -s python3 /usr/bin/python\nENV PYTHONDONTWRITEBYTECODE=1\n"
	default:
		return fmt.Errorf("docker: no recipe for image %q", image)
	}
	ctxTar, err := buildContext(dockerfile, files)
	if err != nil {
		return err
	}
	// The OCI annotations, as docker image inspect and registries read them.
	labels := map[string]string{
		driver.LabelImage:                      image,
		labelRecipe:                            recipe,
		"org.opencontainers.image.title":       image,
		"org.opencontainers.image.description": imageDescription[image],
		"org.opencontainers.image.version":     version.Version,
		"org.opencontainers.image.created":     time.Now().UTC().Format(time.RFC3339),
		"org.opencontainers.image.vendor":      "OpenAgent",
		"org.opencontainers.image.source":      "https://github.com/openagent/orchestrator",
	}
	resp, err := cli.ImageBuild(ctx, ctxTar, build.ImageBuildOptions{Tags: []string{image}, Remove: true, ForceRemove: true,
		Labels: labels})
	if err != nil {
		return fmt.Errorf("docker: build %s: %w", image, err)
	}
	defer resp.Body.Close()
	// The build's outcome is in its progress stream.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var m struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			if m.Error != "" {
				return fmt.Errorf("docker: build %s: %s", image, m.Error)
			}
			if w != nil && m.Stream != "" {
				io.WriteString(w, m.Stream)
			}
		}
	}
	return sc.Err()
}

// sharedLibs lists the shared libraries a binary loads, by ldd.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("docker: ldd %s: %w", bin, err)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	if len(libs) == 0 {
		return nil, errors.New("docker: ldd found no libraries")
	}
	return libs, nil
}

// buildContext makes a tar of the Dockerfile, passwd, group and files.
func buildContext(dockerfile string, files map[string]string) (io.Reader, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for name, data := range map[string]string{"Dockerfile": dockerfile, "passwd": passwd, "group": group} {
		if err := add(name, 0o644, []byte(data)); err != nil {
			return nil, err
		}
	}
	for name, host := range files {
		real, err := filepath.EvalSymlinks(host)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(real)
		if err != nil {
			return nil, err
		}
		st, _ := os.Stat(real)
		if err := add(name, int64(st.Mode().Perm()), data); err != nil {
			return nil, err
		}
	}
	return &buf, tw.Close()
}
