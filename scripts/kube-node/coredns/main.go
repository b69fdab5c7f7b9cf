// CoreDNS with only the plugins the test cluster's DNS uses: it answers for cluster.local from
// the API (kubernetes), on the node address alone (bind), says when it has synced (ready), and
// forwards nothing, so no name lookup of a pod ever leaves the machine. Linking four plugins
// instead of CoreDNS's fifty-odd keeps the build to a few minutes.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order plugins handle a query in, as CoreDNS's own plugin.cfg orders these four.
	dnsserver.Directives = []string{"bind", "ready", "errors", "kubernetes"}
}

func main() {
	coremain.Run()
}
